//! serde between Rust types and Erlang terms: [`to_term`] turns any
//! `Serialize` value into a [`Term`], [`from_term`] reads any
//! `Deserialize` type back from one. Together with [`etf`](super::etf) this
//! exchanges Rust values with Erlang/OTP code in the shapes Erlang code
//! matches on.
//!
//! | Rust (serde's data model)        | Erlang term                                  |
//! |----------------------------------|----------------------------------------------|
//! | `bool`                           | `true`, `false`                              |
//! | `i8`..`i64`, `u8`..`u32`          | integer                                      |
//! | `u64`, `i128`, `u128`             | integer (a [`Term::Big`] beyond `i64`)        |
//! | `f32`, `f64`                      | float (reading also accepts an integer)      |
//! | `char`                           | integer: the code point                      |
//! | `String`, `&str`                  | UTF-8 binary (reading also accepts a charlist and an atom) |
//! | bytes (`serde_bytes`, [`Blob`](crate::Blob)) | binary                           |
//! | `()`                             | `ok`                                         |
//! | unit struct `MyUnit`             | `my_unit`                                    |
//! | `None`, `Some(x)`                | `undefined` (reading also accepts `nil`), `x` |
//! | newtype struct                   | its inner value                              |
//! | `Vec`, sequences                 | list (reading also accepts a tuple, and a binary as a sequence of bytes) |
//! | tuple, tuple struct              | tuple                                        |
//! | map                              | map                                          |
//! | struct                           | map with atom keys: `#{name => <<"x">>, n => 5}` |
//! | struct renamed `"#point"`        | record: `{point, X, Y}`, fields in order     |
//! | unit variant `AddAll`            | `add_all`                                    |
//! | newtype variant                  | `{variant, Value}`                           |
//! | tuple variant                    | `{variant, A, B}`                            |
//! | struct variant                   | `{variant, #{field => Value}}`               |
//! | [`joerl_core::Pid`]              | pid (needs [`PidNames`] to serialize)        |
//!
//! Names are the ones serde passes, so `#[serde(rename = "...")]` applies as
//! usual. A unit struct or variant name that starts with an uppercase letter
//! is converted to snake_case (`Get` → `get`, `AddAll` → `add_all`,
//! `HTTPError` → `http_error`); a name that does not (a rename to `"get"`)
//! is used as it is. Reading an enum accepts the variant's atom for a unit
//! variant and a tuple headed by it otherwise. A struct or tuple struct whose
//! serde name starts with `#` is an Erlang record: a tuple tagged with the
//! rest of the name. Field names are used as they are (Rust field names are
//! already snake_case).
//!
//! A joerl Pid serializes as `struct Pid { node: u32, id: u64, creation: u32 }`;
//! [`to_term_with`] recognizes that struct (by its name and its three fields,
//! so a struct of yours of that exact shape is taken for one) and writes an
//! Erlang pid, naming the node through [`PidNames`] (see [`ErlPid::from_joerl`]).
//! Reading an Erlang pid where a joerl Pid is expected yields
//! [`ErlPid::to_joerl`].
//!
//! `deserialize_any` (for self-describing consumers such as
//! `serde_json::Value` and untagged enums) presents atoms as strings, except
//! `true`/`false` (booleans) and `undefined` (none); integers as `i64`, or as
//! `i128`/`u128` when beyond it; a binary as a string when it is valid UTF-8
//! and as bytes otherwise; lists and tuples as sequences; maps as maps; a pid
//! as the joerl Pid struct. References, ports, funs, external funs, bit
//! binaries and improper lists have no serde form and are an error there and
//! everywhere.

use std::borrow::Cow;
use std::fmt;

use serde::de::value::{BorrowedStrDeserializer, SeqDeserializer};
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, EnumAccess, IntoDeserializer, MapAccess,
    VariantAccess, Visitor,
};
use serde::ser::{self, Serialize};

use super::term::{Atom, BigInt, ErlPid, Term, TermError};

/// Names the node of a joerl Pid, for [`to_term_with`]: the full node name
/// (`name@host`) of a joerl node id, if it is known.
///
/// Any `Fn(u32) -> Option<Atom>` is one.
pub trait PidNames {
    /// The name of the node whose [`node_id`](joerl_core::node_id) is
    /// `node_id`.
    fn node_name(&self, node_id: u32) -> Option<Atom>;
}

impl<F: Fn(u32) -> Option<Atom>> PidNames for F {
    fn node_name(&self, node_id: u32) -> Option<Atom> {
        self(node_id)
    }
}

/// Why a value could not become a term, or a term a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SerdeTermError {
    /// The term does not have the shape the Rust type needs.
    #[error("expected {expected}, found the term {found}")]
    Mismatch {
        /// What the Rust type reads.
        expected: &'static str,
        /// The term found (shortened if long).
        found: String,
    },
    /// An integer outside the Rust type's range.
    #[error("the integer {value} does not fit {rust_type}")]
    OutOfRange {
        /// The integer.
        value: String,
        /// The Rust type.
        rust_type: &'static str,
    },
    /// A joerl Pid of a node whose name is not known.
    #[error(
        "the joerl Pid {pid} cannot become an Erlang pid: PidNames knows no name for node id {node_id} (Erlang names nodes, so the node's full name is needed)"
    )]
    UnknownNode {
        /// The Pid.
        pid: joerl_core::Pid,
        /// Its node id.
        node_id: u32,
    },
    /// A joerl Pid serialized without [`PidNames`].
    #[error(
        "the joerl Pid {pid} can only become an Erlang pid with the names of nodes: use to_term_with and PidNames"
    )]
    NoPidNames {
        /// The Pid.
        pid: joerl_core::Pid,
    },
    /// A name that cannot be an atom.
    #[error("{0}")]
    Atom(#[from] TermError),
    /// A message from a `Serialize` or `Deserialize` implementation (a missing
    /// field, an unknown variant, ...).
    #[error("{0}")]
    Custom(String),
}

impl ser::Error for SerdeTermError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        SerdeTermError::Custom(msg.to_string())
    }
}

impl de::Error for SerdeTermError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        SerdeTermError::Custom(msg.to_string())
    }
}

/// The Erlang term of `value`; see the [module documentation](self) for the
/// mapping. A joerl Pid in `value` is an error ([`SerdeTermError::NoPidNames`]):
/// use [`to_term_with`].
pub fn to_term<T: Serialize + ?Sized>(value: &T) -> Result<Term, SerdeTermError> {
    value.serialize(Ser { names: None })
}

/// The Erlang term of `value`, naming the nodes of joerl Pids with `names`.
pub fn to_term_with<T: Serialize + ?Sized>(
    value: &T,
    names: &dyn PidNames,
) -> Result<Term, SerdeTermError> {
    value.serialize(Ser { names: Some(names) })
}

/// A `T` read from `term`; see the [module documentation](self) for the
/// mapping.
pub fn from_term<T: DeserializeOwned>(term: &Term) -> Result<T, SerdeTermError> {
    T::deserialize(De(term))
}

/// Like [`from_term`], taking the term by value.
pub fn from_term_owned<T: DeserializeOwned>(term: Term) -> Result<T, SerdeTermError> {
    from_term(&term)
}

/// The atom of a unit struct or variant name: snake_case when it starts with
/// an uppercase letter, otherwise as given.
fn erlang_name(name: &str) -> Cow<'_, str> {
    if !name.starts_with(|c: char| c.is_uppercase()) {
        return Cow::Borrowed(name);
    }
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::with_capacity(name.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_uppercase() {
            let prev = i.checked_sub(1).map(|p| chars[p]);
            let next = chars.get(i + 1);
            // A word starts at an uppercase letter after a lowercase letter or
            // digit, or at the last capital of an acronym ("HTTPError").
            let boundary = match prev {
                None => false,
                Some(p) if p.is_lowercase() || p.is_ascii_digit() => true,
                Some(p) if p.is_uppercase() => next.is_some_and(|n| n.is_lowercase()),
                _ => false,
            };
            if boundary {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

fn atom_term(name: &str) -> Result<Term, SerdeTermError> {
    Ok(Term::Atom(Atom::new(name)?))
}

/// A term for an error message: its Erlang syntax, shortened.
fn describe(t: &Term) -> String {
    let s = t.to_string();
    if s.chars().count() <= 120 {
        s
    } else {
        let short: String = s.chars().take(117).collect();
        format!("{short}...")
    }
}

fn mismatch(expected: &'static str, found: &Term) -> SerdeTermError {
    SerdeTermError::Mismatch {
        expected,
        found: describe(found),
    }
}

const PID_NAME: &str = "Pid";
const PID_FIELDS: [&str; 3] = ["node", "id", "creation"];

#[derive(Clone, Copy)]
struct Ser<'n> {
    names: Option<&'n dyn PidNames>,
}

impl<'n> ser::Serializer for Ser<'n> {
    type Ok = Term;
    type Error = SerdeTermError;
    type SerializeSeq = SeqSer<'n>;
    type SerializeTuple = SeqSer<'n>;
    type SerializeTupleStruct = SeqSer<'n>;
    type SerializeTupleVariant = SeqSer<'n>;
    type SerializeMap = MapSer<'n>;
    type SerializeStruct = StructSer<'n>;
    type SerializeStructVariant = StructSer<'n>;

    fn serialize_bool(self, v: bool) -> Result<Term, SerdeTermError> {
        Ok(Term::from(v))
    }
    fn serialize_i8(self, v: i8) -> Result<Term, SerdeTermError> {
        Ok(Term::Int(v.into()))
    }
    fn serialize_i16(self, v: i16) -> Result<Term, SerdeTermError> {
        Ok(Term::Int(v.into()))
    }
    fn serialize_i32(self, v: i32) -> Result<Term, SerdeTermError> {
        Ok(Term::Int(v.into()))
    }
    fn serialize_i64(self, v: i64) -> Result<Term, SerdeTermError> {
        Ok(Term::Int(v))
    }
    fn serialize_i128(self, v: i128) -> Result<Term, SerdeTermError> {
        Ok(Term::from(v))
    }
    fn serialize_u8(self, v: u8) -> Result<Term, SerdeTermError> {
        Ok(Term::Int(v.into()))
    }
    fn serialize_u16(self, v: u16) -> Result<Term, SerdeTermError> {
        Ok(Term::Int(v.into()))
    }
    fn serialize_u32(self, v: u32) -> Result<Term, SerdeTermError> {
        Ok(Term::Int(v.into()))
    }
    fn serialize_u64(self, v: u64) -> Result<Term, SerdeTermError> {
        Ok(Term::from(v))
    }
    fn serialize_u128(self, v: u128) -> Result<Term, SerdeTermError> {
        Ok(Term::big(BigInt::new(false, v.to_le_bytes().to_vec())))
    }
    fn serialize_f32(self, v: f32) -> Result<Term, SerdeTermError> {
        Ok(Term::Float(v.into()))
    }
    fn serialize_f64(self, v: f64) -> Result<Term, SerdeTermError> {
        Ok(Term::Float(v))
    }
    fn serialize_char(self, v: char) -> Result<Term, SerdeTermError> {
        Ok(Term::Int(i64::from(u32::from(v))))
    }
    fn serialize_str(self, v: &str) -> Result<Term, SerdeTermError> {
        Ok(Term::binary(v.as_bytes()))
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<Term, SerdeTermError> {
        Ok(Term::binary(v))
    }
    fn serialize_none(self) -> Result<Term, SerdeTermError> {
        atom_term("undefined")
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<Term, SerdeTermError> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<Term, SerdeTermError> {
        atom_term("ok")
    }
    fn serialize_unit_struct(self, name: &'static str) -> Result<Term, SerdeTermError> {
        match name.strip_prefix('#') {
            Some(record) => Ok(Term::tuple(vec![atom_term(record)?])),
            None => atom_term(&erlang_name(name)),
        }
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<Term, SerdeTermError> {
        atom_term(&erlang_name(variant))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<Term, SerdeTermError> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<Term, SerdeTermError> {
        Ok(Term::tuple(vec![
            atom_term(&erlang_name(variant))?,
            value.serialize(self)?,
        ]))
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<SeqSer<'n>, SerdeTermError> {
        Ok(SeqSer::new(self, SeqKind::List, None, len.unwrap_or(0)))
    }
    fn serialize_tuple(self, len: usize) -> Result<SeqSer<'n>, SerdeTermError> {
        Ok(SeqSer::new(self, SeqKind::Tuple, None, len))
    }
    fn serialize_tuple_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<SeqSer<'n>, SerdeTermError> {
        let head = name.strip_prefix('#').map(atom_term).transpose()?;
        Ok(SeqSer::new(self, SeqKind::Tuple, head, len))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<SeqSer<'n>, SerdeTermError> {
        let head = atom_term(&erlang_name(variant))?;
        Ok(SeqSer::new(self, SeqKind::Tuple, Some(head), len))
    }
    fn serialize_map(self, len: Option<usize>) -> Result<MapSer<'n>, SerdeTermError> {
        Ok(MapSer {
            ser: self,
            pairs: Vec::with_capacity(len.unwrap_or(0)),
            key: None,
        })
    }
    fn serialize_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<StructSer<'n>, SerdeTermError> {
        let shape = if name == PID_NAME && len == PID_FIELDS.len() {
            StructShape::MaybePid
        } else if let Some(record) = name.strip_prefix('#') {
            StructShape::Record(atom_term(record)?)
        } else {
            StructShape::Map
        };
        Ok(StructSer {
            ser: self,
            shape,
            fields: Vec::with_capacity(len),
        })
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<StructSer<'n>, SerdeTermError> {
        Ok(StructSer {
            ser: self,
            shape: StructShape::Variant(atom_term(&erlang_name(variant))?),
            fields: Vec::with_capacity(len),
        })
    }
}

enum SeqKind {
    List,
    Tuple,
}

struct SeqSer<'n> {
    ser: Ser<'n>,
    kind: SeqKind,
    items: Vec<Term>,
}

impl<'n> SeqSer<'n> {
    fn new(ser: Ser<'n>, kind: SeqKind, head: Option<Term>, len: usize) -> SeqSer<'n> {
        // The capacity is a hint from the Serialize impl; keep it modest.
        let mut items = Vec::with_capacity(len.min(4096) + usize::from(head.is_some()));
        items.extend(head);
        SeqSer { ser, kind, items }
    }

    fn push<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), SerdeTermError> {
        self.items.push(value.serialize(self.ser)?);
        Ok(())
    }

    fn done(self) -> Term {
        match self.kind {
            SeqKind::List => Term::List(self.items),
            SeqKind::Tuple => Term::Tuple(self.items),
        }
    }
}

impl ser::SerializeSeq for SeqSer<'_> {
    type Ok = Term;
    type Error = SerdeTermError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), SerdeTermError> {
        self.push(v)
    }
    fn end(self) -> Result<Term, SerdeTermError> {
        Ok(self.done())
    }
}

impl ser::SerializeTuple for SeqSer<'_> {
    type Ok = Term;
    type Error = SerdeTermError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), SerdeTermError> {
        self.push(v)
    }
    fn end(self) -> Result<Term, SerdeTermError> {
        Ok(self.done())
    }
}

impl ser::SerializeTupleStruct for SeqSer<'_> {
    type Ok = Term;
    type Error = SerdeTermError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), SerdeTermError> {
        self.push(v)
    }
    fn end(self) -> Result<Term, SerdeTermError> {
        Ok(self.done())
    }
}

impl ser::SerializeTupleVariant for SeqSer<'_> {
    type Ok = Term;
    type Error = SerdeTermError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), SerdeTermError> {
        self.push(v)
    }
    fn end(self) -> Result<Term, SerdeTermError> {
        Ok(self.done())
    }
}

struct MapSer<'n> {
    ser: Ser<'n>,
    pairs: Vec<(Term, Term)>,
    key: Option<Term>,
}

impl ser::SerializeMap for MapSer<'_> {
    type Ok = Term;
    type Error = SerdeTermError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), SerdeTermError> {
        self.key = Some(key.serialize(self.ser)?);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), SerdeTermError> {
        let key = self.key.take().ok_or_else(|| {
            SerdeTermError::Custom("a map value was serialized before its key".into())
        })?;
        self.pairs.push((key, v.serialize(self.ser)?));
        Ok(())
    }
    fn end(self) -> Result<Term, SerdeTermError> {
        Ok(Term::Map(self.pairs))
    }
}

enum StructShape {
    /// A map with atom keys.
    Map,
    /// `{tag, F1, F2, ...}`.
    Record(Term),
    /// `{variant, #{field => ...}}`.
    Variant(Term),
    /// Named `Pid` with three fields: a joerl Pid if they are `node`, `id`
    /// and `creation`.
    MaybePid,
}

struct StructSer<'n> {
    ser: Ser<'n>,
    shape: StructShape,
    fields: Vec<(&'static str, Term)>,
}

impl StructSer<'_> {
    fn field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        v: &T,
    ) -> Result<(), SerdeTermError> {
        self.fields.push((key, v.serialize(self.ser)?));
        Ok(())
    }

    fn as_map(fields: Vec<(&'static str, Term)>) -> Result<Term, SerdeTermError> {
        let pairs = fields
            .into_iter()
            .map(|(k, v)| Ok((atom_term(k)?, v)))
            .collect::<Result<_, SerdeTermError>>()?;
        Ok(Term::Map(pairs))
    }

    fn done(self) -> Result<Term, SerdeTermError> {
        match self.shape {
            StructShape::Map => Self::as_map(self.fields),
            StructShape::Record(tag) => {
                let mut items = Vec::with_capacity(self.fields.len() + 1);
                items.push(tag);
                items.extend(self.fields.into_iter().map(|(_, v)| v));
                Ok(Term::Tuple(items))
            }
            StructShape::Variant(tag) => Ok(Term::tuple(vec![tag, Self::as_map(self.fields)?])),
            StructShape::MaybePid => match joerl_pid(&self.fields) {
                Some(pid) => {
                    let names = self.ser.names.ok_or(SerdeTermError::NoPidNames { pid })?;
                    let node = names
                        .node_name(pid.node())
                        .ok_or(SerdeTermError::UnknownNode {
                            pid,
                            node_id: pid.node(),
                        })?;
                    Ok(Term::Pid(ErlPid::from_joerl(pid, node)))
                }
                None => Self::as_map(self.fields),
            },
        }
    }
}

/// The joerl Pid whose serialized fields these are, if they are one's.
fn joerl_pid(fields: &[(&'static str, Term)]) -> Option<joerl_core::Pid> {
    let [("node", node), ("id", id), ("creation", creation)] = fields else {
        return None;
    };
    let as_u64 = |t: &Term| match t {
        Term::Int(i) => u64::try_from(*i).ok(),
        Term::Big(b) => b.to_u64(),
        _ => None,
    };
    let node = u32::try_from(as_u64(node)?).ok()?;
    let creation = u32::try_from(as_u64(creation)?).ok()?;
    Some(joerl_core::Pid::new(node, as_u64(id)?, creation))
}

impl ser::SerializeStruct for StructSer<'_> {
    type Ok = Term;
    type Error = SerdeTermError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        v: &T,
    ) -> Result<(), SerdeTermError> {
        self.field(key, v)
    }
    fn end(self) -> Result<Term, SerdeTermError> {
        self.done()
    }
}

impl ser::SerializeStructVariant for StructSer<'_> {
    type Ok = Term;
    type Error = SerdeTermError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        v: &T,
    ) -> Result<(), SerdeTermError> {
        self.field(key, v)
    }
    fn end(self) -> Result<Term, SerdeTermError> {
        self.done()
    }
}

/// Reads a Rust value out of a borrowed term.
#[derive(Clone, Copy)]
struct De<'de>(&'de Term);

macro_rules! de_int {
    ($method:ident, $visit:ident, $ty:ty) => {
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SerdeTermError> {
            let v = match self.0 {
                Term::Int(i) => <$ty>::try_from(*i).map_err(|_| SerdeTermError::OutOfRange {
                    value: i.to_string(),
                    rust_type: stringify!($ty),
                })?,
                Term::Big(b) => b
                    .to_i128()
                    .and_then(|i| <$ty>::try_from(i).ok())
                    .or_else(|| b.to_u128().and_then(|u| <$ty>::try_from(u).ok()))
                    .ok_or_else(|| SerdeTermError::OutOfRange {
                        value: b.to_string(),
                        rust_type: stringify!($ty),
                    })?,
                t => return Err(mismatch(concat!("an integer (", stringify!($ty), ")"), t)),
            };
            visitor.$visit(v)
        }
    };
}

impl<'de> De<'de> {
    /// The text of a binary, a charlist or an atom.
    fn text(self) -> Result<Cow<'de, str>, SerdeTermError> {
        let not_text = || mismatch("a string (a UTF-8 binary, a charlist or an atom)", self.0);
        match self.0 {
            Term::Binary(b) => std::str::from_utf8(b)
                .map(Cow::Borrowed)
                .map_err(|_| not_text()),
            Term::Atom(a) => Ok(Cow::Borrowed(a.as_str())),
            Term::List(items) => items
                .iter()
                .map(|t| match t {
                    Term::Int(i) => u32::try_from(*i).ok().and_then(char::from_u32),
                    _ => None,
                })
                .collect::<Option<String>>()
                .map(Cow::Owned)
                .ok_or_else(not_text),
            _ => Err(not_text()),
        }
    }

    fn visit_text<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SerdeTermError> {
        match self.text()? {
            Cow::Borrowed(s) => visitor.visit_borrowed_str(s),
            Cow::Owned(s) => visitor.visit_string(s),
        }
    }

    fn visit_pid<V: Visitor<'de>>(
        pid: &'de ErlPid,
        visitor: V,
    ) -> Result<V::Value, SerdeTermError> {
        visitor.visit_map(PidAccess {
            pid: pid.to_joerl(),
            next: 0,
        })
    }

    fn visit_map_pairs<V: Visitor<'de>>(
        pairs: &'de [(Term, Term)],
        visitor: V,
    ) -> Result<V::Value, SerdeTermError> {
        let mut access = PairsAccess {
            pairs: pairs.iter(),
            value: None,
        };
        let v = visitor.visit_map(&mut access)?;
        let left = access.pairs.len();
        if left > 0 {
            return Err(SerdeTermError::Custom(format!(
                "{left} map pairs were left unread"
            )));
        }
        Ok(v)
    }
}

fn visit_items<'de, V: Visitor<'de>>(
    items: &'de [Term],
    visitor: V,
) -> Result<V::Value, SerdeTermError> {
    let mut seq = SeqDeserializer::new(items.iter().map(De));
    let v = visitor.visit_seq(&mut seq)?;
    seq.end()?;
    Ok(v)
}

impl<'de> IntoDeserializer<'de, SerdeTermError> for De<'de> {
    type Deserializer = Self;
    fn into_deserializer(self) -> Self {
        self
    }
}

impl<'de> de::Deserializer<'de> for De<'de> {
    type Error = SerdeTermError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SerdeTermError> {
        match self.0 {
            Term::Atom(a) => match a.as_str() {
                "true" => visitor.visit_bool(true),
                "false" => visitor.visit_bool(false),
                "undefined" => visitor.visit_none(),
                s => visitor.visit_borrowed_str(s),
            },
            Term::Int(i) => visitor.visit_i64(*i),
            Term::Big(b) => match (b.to_i128(), b.to_u128()) {
                (Some(i), _) => visitor.visit_i128(i),
                (None, Some(u)) => visitor.visit_u128(u),
                _ => Err(SerdeTermError::OutOfRange {
                    value: b.to_string(),
                    rust_type: "i128 or u128",
                }),
            },
            Term::Float(f) => visitor.visit_f64(*f),
            Term::Binary(b) => match std::str::from_utf8(b) {
                Ok(s) => visitor.visit_borrowed_str(s),
                Err(_) => visitor.visit_borrowed_bytes(b),
            },
            Term::List(items) | Term::Tuple(items) => visit_items(items, visitor),
            Term::Map(pairs) => De::visit_map_pairs(pairs, visitor),
            Term::Pid(p) => De::visit_pid(p, visitor),
            t => Err(mismatch(
                "a term with a serde form (not a reference, port, fun, bit binary or improper list)",
                t,
            )),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SerdeTermError> {
        match self.0.as_atom() {
            Some("true") => visitor.visit_bool(true),
            Some("false") => visitor.visit_bool(false),
            _ => Err(mismatch("a bool (the atom true or false)", self.0)),
        }
    }

    de_int!(deserialize_i8, visit_i8, i8);
    de_int!(deserialize_i16, visit_i16, i16);
    de_int!(deserialize_i32, visit_i32, i32);
    de_int!(deserialize_i64, visit_i64, i64);
    de_int!(deserialize_i128, visit_i128, i128);
    de_int!(deserialize_u8, visit_u8, u8);
    de_int!(deserialize_u16, visit_u16, u16);
    de_int!(deserialize_u32, visit_u32, u32);
    de_int!(deserialize_u64, visit_u64, u64);
    de_int!(deserialize_u128, visit_u128, u128);

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SerdeTermError> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SerdeTermError> {
        match self.0 {
            Term::Float(f) => visitor.visit_f64(*f),
            Term::Int(i) => visitor.visit_f64(*i as f64),
            t => Err(mismatch("a float", t)),
        }
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SerdeTermError> {
        let c = match self.0 {
            Term::Int(i) => u32::try_from(*i).ok().and_then(char::from_u32),
            Term::Binary(_) | Term::Atom(_) => self.text().ok().and_then(|s| {
                let mut it = s.chars();
                match (it.next(), it.next()) {
                    (Some(c), None) => Some(c),
                    _ => None,
                }
            }),
            _ => None,
        };
        match c {
            Some(c) => visitor.visit_char(c),
            None => Err(mismatch(
                "a char (an integer code point, or a one-character binary)",
                self.0,
            )),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SerdeTermError> {
        self.visit_text(visitor)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SerdeTermError> {
        self.visit_text(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SerdeTermError> {
        match self.0 {
            Term::Binary(b) => visitor.visit_borrowed_bytes(b),
            Term::List(items) => {
                let bytes = items
                    .iter()
                    .map(|t| t.as_int().and_then(|i| u8::try_from(i).ok()))
                    .collect::<Option<Vec<u8>>>()
                    .ok_or_else(|| mismatch("bytes (a binary)", self.0))?;
                visitor.visit_byte_buf(bytes)
            }
            t => Err(mismatch("bytes (a binary)", t)),
        }
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SerdeTermError> {
        self.deserialize_bytes(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SerdeTermError> {
        match self.0.as_atom() {
            Some("undefined" | "nil") => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SerdeTermError> {
        if self.0.is_atom("ok") {
            visitor.visit_unit()
        } else {
            Err(mismatch("() (the atom ok)", self.0))
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, SerdeTermError> {
        let ok = match (name.strip_prefix('#'), self.0) {
            (Some(record), Term::Tuple(items)) => items.len() == 1 && items[0].is_atom(record),
            (Some(_), _) => false,
            (None, t) => t.is_atom(&erlang_name(name)),
        };
        if ok {
            visitor.visit_unit()
        } else {
            Err(mismatch("a unit struct (the atom of its name)", self.0))
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, SerdeTermError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SerdeTermError> {
        match self.0 {
            Term::List(items) | Term::Tuple(items) => visit_items(items, visitor),
            Term::Binary(b) => {
                let mut seq = SeqDeserializer::<_, SerdeTermError>::new(b.iter().copied());
                let v = visitor.visit_seq(&mut seq)?;
                seq.end()?;
                Ok(v)
            }
            t => Err(mismatch("a sequence (a list or a tuple)", t)),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, SerdeTermError> {
        match self.0 {
            Term::Tuple(items) | Term::List(items) if items.len() == len => {
                visit_items(items, visitor)
            }
            t => Err(mismatch("a tuple of the Rust tuple's arity", t)),
        }
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, SerdeTermError> {
        match name.strip_prefix('#') {
            Some(record) => match self.0 {
                Term::Tuple(items) if items.len() == len + 1 && items[0].is_atom(record) => {
                    visit_items(&items[1..], visitor)
                }
                t => Err(mismatch(
                    "a record {tag, Fields...} of the struct's arity",
                    t,
                )),
            },
            None => self.deserialize_tuple(len, visitor),
        }
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SerdeTermError> {
        match self.0 {
            Term::Map(pairs) => De::visit_map_pairs(pairs, visitor),
            t => Err(mismatch("a map", t)),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, SerdeTermError> {
        if let Some(record) = name.strip_prefix('#') {
            return match self.0 {
                Term::Tuple(items)
                    if items.len() == fields.len() + 1 && items[0].is_atom(record) =>
                {
                    visit_items(&items[1..], visitor)
                }
                t => Err(mismatch(
                    "a record {tag, Fields...} with the struct's fields",
                    t,
                )),
            };
        }
        match self.0 {
            Term::Pid(p) if name == PID_NAME && fields == PID_FIELDS => De::visit_pid(p, visitor),
            Term::Map(pairs) => De::visit_map_pairs(pairs, visitor),
            t => Err(mismatch("a struct (a map with atom keys)", t)),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, SerdeTermError> {
        let (tag, rest) = match self.0 {
            Term::Atom(a) => (a, None),
            Term::Tuple(items) => match items.split_first() {
                Some((Term::Atom(a), rest)) => (a, Some(rest)),
                _ => {
                    return Err(mismatch(
                        "an enum (a variant's atom, or a tuple headed by it)",
                        self.0,
                    ));
                }
            },
            t => {
                return Err(mismatch(
                    "an enum (a variant's atom, or a tuple headed by it)",
                    t,
                ));
            }
        };
        // The Rust name of the variant whose atom this is; an unknown atom is
        // passed on for serde to report.
        let variant = variants
            .iter()
            .find(|v| erlang_name(v) == tag.as_str())
            .copied()
            .unwrap_or(tag.as_str());
        visitor.visit_enum(Variant {
            variant,
            whole: self.0,
            rest,
        })
    }

    fn deserialize_identifier<V: Visitor<'de>>(
        self,
        visitor: V,
    ) -> Result<V::Value, SerdeTermError> {
        match self.0 {
            Term::Int(i) if *i >= 0 => visitor.visit_u64(*i as u64),
            _ => self.visit_text(visitor),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(
        self,
        visitor: V,
    ) -> Result<V::Value, SerdeTermError> {
        visitor.visit_unit()
    }
}

/// The fields of a joerl Pid, presented as its derived struct form.
struct PidAccess {
    pid: joerl_core::Pid,
    next: usize,
}

impl<'de> MapAccess<'de> for PidAccess {
    type Error = SerdeTermError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, SerdeTermError> {
        let Some(name) = PID_FIELDS.get(self.next) else {
            return Ok(None);
        };
        seed.deserialize(BorrowedStrDeserializer::new(name))
            .map(Some)
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<S::Value, SerdeTermError> {
        let i = self.next;
        self.next += 1;
        match i {
            0 => seed.deserialize(self.pid.node().into_deserializer()),
            1 => seed.deserialize(self.pid.id().into_deserializer()),
            _ => seed.deserialize(self.pid.creation().into_deserializer()),
        }
    }
}

struct PairsAccess<'de> {
    pairs: std::slice::Iter<'de, (Term, Term)>,
    value: Option<&'de Term>,
}

impl<'de> MapAccess<'de> for PairsAccess<'de> {
    type Error = SerdeTermError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, SerdeTermError> {
        match self.pairs.next() {
            Some((k, v)) => {
                self.value = Some(v);
                seed.deserialize(De(k)).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<S::Value, SerdeTermError> {
        let v = self
            .value
            .take()
            .ok_or_else(|| SerdeTermError::Custom("a map value was read before its key".into()))?;
        seed.deserialize(De(v))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.pairs.len())
    }
}

struct Variant<'de> {
    variant: &'de str,
    whole: &'de Term,
    /// The tuple's elements after the tag; `None` for a bare atom.
    rest: Option<&'de [Term]>,
}

impl<'de> EnumAccess<'de> for Variant<'de> {
    type Error = SerdeTermError;
    type Variant = Self;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Self), SerdeTermError> {
        let v = seed.deserialize(BorrowedStrDeserializer::<SerdeTermError>::new(self.variant))?;
        Ok((v, self))
    }
}

impl<'de> VariantAccess<'de> for Variant<'de> {
    type Error = SerdeTermError;

    fn unit_variant(self) -> Result<(), SerdeTermError> {
        match self.rest {
            None | Some([]) => Ok(()),
            Some(_) => Err(mismatch("a unit variant (the variant's atom)", self.whole)),
        }
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<S::Value, SerdeTermError> {
        match self.rest {
            Some([value]) => seed.deserialize(De(value)),
            _ => Err(mismatch("a newtype variant {variant, Value}", self.whole)),
        }
    }

    fn tuple_variant<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, SerdeTermError> {
        match self.rest {
            Some(items) if items.len() == len => visit_items(items, visitor),
            _ => Err(mismatch(
                "a tuple variant {variant, A, B, ...} of the variant's arity",
                self.whole,
            )),
        }
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, SerdeTermError> {
        match self.rest {
            Some([Term::Map(pairs)]) => De::visit_map_pairs(pairs, visitor),
            _ => Err(mismatch(
                "a struct variant {variant, #{field => Value}}",
                self.whole,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::Blob;
    use crate::erlang::etf;

    fn atom(s: &str) -> Term {
        Term::atom(s)
    }

    /// `value` maps to `term`, and `term` maps back to `value`, directly and
    /// through the ETF bytes.
    fn both_ways<T>(value: T, term: Term)
    where
        T: Serialize + DeserializeOwned + PartialEq + fmt::Debug,
    {
        assert_eq!(to_term(&value).unwrap(), term, "{value:?}");
        assert_eq!(from_term::<T>(&term).unwrap(), value, "{term}");
        let back = etf::decode(&etf::encode(&term)).unwrap();
        assert_eq!(from_term::<T>(&back).unwrap(), value, "{term} through ETF");
    }

    #[test]
    fn scalars() {
        both_ways(true, atom("true"));
        both_ways(false, atom("false"));
        both_ways(-5i8, Term::Int(-5));
        both_ways(300i16, Term::Int(300));
        both_ways(-70000i32, Term::Int(-70000));
        both_ways(i64::MIN, Term::Int(i64::MIN));
        both_ways(255u8, Term::Int(255));
        both_ways(65535u16, Term::Int(65535));
        both_ways(u32::MAX, Term::Int(u32::MAX.into()));
        both_ways(7u64, Term::Int(7));
        both_ways(u64::MAX, Term::from(u64::MAX));
        assert!(matches!(to_term(&u64::MAX).unwrap(), Term::Big(_)));
        both_ways(i128::MIN, Term::from(i128::MIN));
        both_ways(u128::MAX, Term::Big(BigInt::new(false, vec![0xff; 16])));
        both_ways(1.5f64, Term::Float(1.5));
        both_ways(0.25f32, Term::Float(0.25));
        both_ways('é', Term::Int(0xe9));
        both_ways("héllo".to_string(), Term::binary("héllo".as_bytes()));
        both_ways(Blob(vec![1, 2, 3]), Term::binary(vec![1, 2, 3]));
        both_ways((), atom("ok"));
        both_ways(None::<u8>, atom("undefined"));
        both_ways(Some(3u8), Term::Int(3));
    }

    #[test]
    fn lenient_readings() {
        // A charlist and an atom read as a String; an integer as a float.
        let charlist = Term::list("hé".chars().map(|c| Term::Int(c as i64)).collect());
        assert_eq!(from_term::<String>(&charlist).unwrap(), "hé");
        assert_eq!(from_term::<String>(&atom("abc")).unwrap(), "abc");
        assert_eq!(from_term::<f64>(&Term::Int(2)).unwrap(), 2.0);
        assert_eq!(from_term::<Option<u8>>(&atom("nil")).unwrap(), None);
        // A binary is also a Vec<u8>, a tuple a Vec.
        assert_eq!(
            from_term::<Vec<u8>>(&Term::binary(vec![1, 2])).unwrap(),
            vec![1, 2]
        );
        assert_eq!(
            from_term::<Vec<u8>>(&Term::tuple(vec![Term::Int(1)])).unwrap(),
            vec![1]
        );
    }

    #[test]
    fn mismatches_say_what_and_where() {
        let e = from_term::<bool>(&Term::Int(1)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "expected a bool (the atom true or false), found the term 1"
        );
        let e = from_term::<u8>(&Term::Int(300)).unwrap_err();
        assert_eq!(
            e,
            SerdeTermError::OutOfRange {
                value: "300".into(),
                rust_type: "u8"
            }
        );
        let e = from_term::<String>(&Term::binary(vec![0xff])).unwrap_err();
        assert!(matches!(e, SerdeTermError::Mismatch { .. }), "{e}");
        assert!(from_term::<(u8, u8)>(&Term::tuple(vec![Term::Int(1)])).is_err());
        let long = Term::list((0..1000).map(Term::Int).collect());
        let e = from_term::<u8>(&long).unwrap_err().to_string();
        assert!(e.len() < 200 && e.ends_with("..."), "{e}");
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct MyUnit;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Meters(u32);

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Pair(u8, String);

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Person {
        name: String,
        n: u32,
        tags: Vec<String>,
        nick: Option<String>,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(rename = "#point")]
    struct Point {
        x: i32,
        y: i32,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(rename = "#span")]
    struct Span(u32, u32);

    #[test]
    fn compound_types() {
        both_ways(MyUnit, atom("my_unit"));
        both_ways(Meters(5), Term::Int(5));
        both_ways(
            vec![1u8, 2, 3],
            Term::list(vec![Term::Int(1), Term::Int(2), Term::Int(3)]),
        );
        both_ways(
            (1u8, "a".to_string(), true),
            Term::tuple(vec![Term::Int(1), Term::binary(*b"a"), atom("true")]),
        );
        both_ways(
            Pair(1, "b".into()),
            Term::tuple(vec![Term::Int(1), Term::binary(*b"b")]),
        );
        let mut map = BTreeMap::new();
        map.insert("k".to_string(), 1u8);
        both_ways(map, Term::map(vec![(Term::binary(*b"k"), Term::Int(1))]));
        both_ways(
            Person {
                name: "x".into(),
                n: 5,
                tags: vec!["t".into()],
                nick: None,
            },
            Term::map(vec![
                (atom("name"), Term::binary(*b"x")),
                (atom("n"), Term::Int(5)),
                (atom("tags"), Term::list(vec![Term::binary(*b"t")])),
                (atom("nick"), atom("undefined")),
            ]),
        );
        // Map pairs may come in any order.
        let reordered = Term::map(vec![
            (atom("nick"), Term::binary(*b"y")),
            (atom("tags"), Term::nil()),
            (atom("n"), Term::Int(1)),
            (atom("name"), Term::binary(*b"z")),
        ]);
        assert_eq!(
            from_term::<Person>(&reordered).unwrap(),
            Person {
                name: "z".into(),
                n: 1,
                tags: vec![],
                nick: Some("y".into())
            }
        );
    }

    #[test]
    fn records() {
        both_ways(
            Point { x: 1, y: -2 },
            Term::tuple(vec![atom("point"), Term::Int(1), Term::Int(-2)]),
        );
        both_ways(
            Span(3, 4),
            Term::tuple(vec![atom("span"), Term::Int(3), Term::Int(4)]),
        );
        let wrong_tag = Term::tuple(vec![atom("line"), Term::Int(1), Term::Int(2)]);
        assert!(from_term::<Point>(&wrong_tag).is_err());
        let wrong_arity = Term::tuple(vec![atom("point"), Term::Int(1)]);
        assert!(from_term::<Point>(&wrong_arity).is_err());
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Request {
        Get,
        AddAll,
        #[serde(rename = "stop_now")]
        StopNow,
        HTTPError,
        Put(String),
        Move(i32, i32),
        Resize {
            w: u32,
            h: u32,
        },
    }

    #[test]
    fn enums_of_every_variant_kind() {
        both_ways(Request::Get, atom("get"));
        both_ways(Request::AddAll, atom("add_all"));
        both_ways(Request::StopNow, atom("stop_now"));
        both_ways(Request::HTTPError, atom("http_error"));
        both_ways(
            Request::Put("k".into()),
            Term::tuple(vec![atom("put"), Term::binary(*b"k")]),
        );
        both_ways(
            Request::Move(1, -1),
            Term::tuple(vec![atom("move"), Term::Int(1), Term::Int(-1)]),
        );
        both_ways(
            Request::Resize { w: 2, h: 3 },
            Term::tuple(vec![
                atom("resize"),
                Term::map(vec![(atom("w"), Term::Int(2)), (atom("h"), Term::Int(3))]),
            ]),
        );
        let e = from_term::<Request>(&atom("nope")).unwrap_err();
        assert!(e.to_string().contains("unknown variant"), "{e}");
        assert!(from_term::<Request>(&Term::tuple(vec![atom("put")])).is_err());
        assert!(from_term::<Request>(&Term::Int(1)).is_err());
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(untagged)]
    enum Loose {
        N(i64),
        S(String),
        L(Vec<Loose>),
    }

    #[test]
    fn deserialize_any_serves_self_describing_consumers() {
        let t = Term::map(vec![
            (atom("a"), Term::Int(1)),
            (atom("b"), Term::list(vec![atom("true"), Term::Float(1.5)])),
            (atom("c"), atom("undefined")),
            (atom("d"), Term::binary(*b"text")),
            (atom("e"), Term::tuple(vec![atom("x")])),
        ]);
        let v: serde_json::Value = from_term(&t).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"a": 1, "b": [true, 1.5], "c": null, "d": "text", "e": ["x"]})
        );
        assert_eq!(
            from_term::<Loose>(&Term::list(vec![Term::Int(1), Term::binary(*b"s")])).unwrap(),
            Loose::L(vec![Loose::N(1), Loose::S("s".into())])
        );
        assert!(
            from_term::<serde_json::Value>(&Term::Ref(crate::erlang::ErlRef {
                node: Atom::from_static("n@h"),
                creation: 1,
                ids: vec![1],
            }))
            .is_err()
        );
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Req {
        from: joerl_core::Pid,
        n: u32,
    }

    #[test]
    fn joerl_pids_become_erlang_pids() {
        let name = Atom::from_static("a@host");
        let node = joerl_core::node_id(name.as_str());
        let names = |id: u32| (id == node).then(|| name.clone());
        let pid = joerl_core::Pid::new(node, (5u64 << 32) | 9, 2);
        let erl = Term::Pid(ErlPid {
            node: name.clone(),
            id: 9,
            serial: 5,
            creation: 2,
        });
        assert_eq!(to_term_with(&pid, &names).unwrap(), erl);
        assert_eq!(from_term::<joerl_core::Pid>(&erl).unwrap(), pid);
        let req = Req { from: pid, n: 4 };
        let term = to_term_with(&req, &names).unwrap();
        assert_eq!(
            term,
            Term::map(vec![(atom("from"), erl.clone()), (atom("n"), Term::Int(4))])
        );
        let back = etf::decode(&etf::encode(&term)).unwrap();
        assert_eq!(from_term::<Req>(&back).unwrap(), req);
        // Without names, or with a node it does not know, it is an error.
        assert_eq!(
            to_term(&pid).unwrap_err(),
            SerdeTermError::NoPidNames { pid }
        );
        let other = joerl_core::Pid::new(node ^ 1, 1, 1);
        assert_eq!(
            to_term_with(&other, &names).unwrap_err(),
            SerdeTermError::UnknownNode {
                pid: other,
                node_id: node ^ 1
            }
        );
        // A pid read by deserialize_any has the struct form.
        let v: serde_json::Value = from_term(&erl).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"node": node, "id": (5u64 << 32) | 9, "creation": 2})
        );
    }

    #[test]
    fn snake_case_names() {
        for (rust, erl) in [
            ("Get", "get"),
            ("AddAll", "add_all"),
            ("HTTPError", "http_error"),
            ("V2Api", "v2_api"),
            ("already_lower", "already_lower"),
            ("A", "a"),
        ] {
            assert_eq!(erlang_name(rust), erl);
        }
    }
}
