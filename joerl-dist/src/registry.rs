//! The wire registry: which Rust types may cross nodes, and under which name.
//!
//! A message type is registered once, next to its definition, with
//! [`remote_message!`](crate::remote_message):
//!
//! ```
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct PingMsg { count: u32 }
//! joerl_dist::remote_message!(PingMsg, "myapp::PingMsg");
//! ```
//!
//! The macro submits a [`RemoteMessageType`] to `inventory`, so every registration
//! in every crate linked into the binary is known at start-up without any call
//! at run time. The tables from `TypeId` and from wire id are built once, on first
//! use. On the wire a type is named by its *wire id*: the 64-bit FNV-1a hash of its
//! registered name, so both nodes agree without exchanging tables. Two types that
//! claim one name (or two names that hash alike) are reported when a node starts.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::OnceLock;

use serde::{Serialize, de::DeserializeOwned};

use crate::codec;
use crate::error::CodecError;
use joerl_core::Message;
use joerl_core::fxhash::FxBuildHasher;

/// One registered message type. Built by [`remote_message!`](crate::remote_message);
/// not meant to be constructed by hand.
pub struct RemoteMessageType {
    /// The registered name (stable across versions and binaries).
    pub name: &'static str,
    /// `std::any::type_name` of the Rust type, for error messages.
    pub type_name: fn() -> &'static str,
    /// The Rust type's `TypeId`.
    pub type_id: fn() -> TypeId,
    /// Appends the bincode encoding of the value (which must be of this type).
    pub encode: fn(&dyn Any, &mut Vec<u8>) -> Result<(), CodecError>,
    /// Decodes a value of this type into a [`Message`]; the second argument is
    /// the most memory decoding may claim (the node's `max_message_memory`).
    pub decode: fn(&[u8], usize) -> Result<Message, CodecError>,
    /// The value (which must be of this type) as an Erlang term, for Erlang
    /// nodes (see [`crate::erlang::serde_term`]).
    pub to_term: fn(
        &dyn Any,
        &dyn crate::erlang::serde_term::PidNames,
    ) -> Result<crate::erlang::Term, crate::erlang::serde_term::SerdeTermError>,
}

impl RemoteMessageType {
    /// The registration record for `T` under `name`.
    pub const fn of<T>(name: &'static str) -> Self
    where
        T: Serialize + DeserializeOwned + Send + 'static,
    {
        RemoteMessageType {
            name,
            type_name: std::any::type_name::<T>,
            type_id: TypeId::of::<T>,
            encode: encode_as::<T>,
            decode: decode_as::<T>,
            to_term: to_term_as::<T>,
        }
    }
}

fn encode_as<T: Serialize + 'static>(value: &dyn Any, out: &mut Vec<u8>) -> Result<(), CodecError> {
    let value = value
        .downcast_ref::<T>()
        .ok_or(CodecError::TypeMismatch(std::any::type_name::<T>()))?;
    codec::encode_into(value, out)
}

fn to_term_as<T: Serialize + 'static>(
    value: &dyn Any,
    names: &dyn crate::erlang::serde_term::PidNames,
) -> Result<crate::erlang::Term, crate::erlang::serde_term::SerdeTermError> {
    let value = value.downcast_ref::<T>().ok_or_else(|| {
        crate::erlang::serde_term::SerdeTermError::Custom(format!(
            "internal error: registry entry for {} got a value of another type",
            std::any::type_name::<T>()
        ))
    })?;
    crate::erlang::serde_term::to_term_with(value, names)
}

fn decode_as<T: DeserializeOwned + Send + 'static>(
    bytes: &[u8],
    max_memory: usize,
) -> Result<Message, CodecError> {
    let value: T = codec::decode_exact(bytes, max_memory)?;
    Ok(Box::new(value))
}

inventory::collect!(RemoteMessageType);

/// Registers a serde type for sending to other nodes under a stable name.
///
/// ```
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Chat { text: String }
/// joerl_dist::remote_message!(Chat, "chat::Chat");
/// ```
#[macro_export]
macro_rules! remote_message {
    ($ty:ty, $name:expr) => {
        $crate::inventory::submit! {
            $crate::registry::RemoteMessageType::of::<$ty>($name)
        }
    };
}

/// The message types of one gen_server, registered by
/// [`remote_server!`](crate::remote_server); not meant to be built by hand.
pub struct RemoteServerTypes {
    /// `std::any::type_name` of the server, for error messages.
    pub server: fn() -> &'static str,
    /// Appends the registrations of the server's requests, their replies and
    /// its casts.
    pub types: fn(&mut Vec<RemoteMessageType>),
}

inventory::collect!(RemoteServerTypes);

/// A tuple of [`Request`](joerl_core::gen_server::Request) types (a server's
/// `type Calls`) whose requests and replies can cross nodes. Implemented for
/// tuples of up to twelve serde types.
pub trait RemoteCalls {
    /// Appends a registration for each request and each reply type, named by
    /// its Rust type path.
    fn collect(out: &mut Vec<RemoteMessageType>);
}

/// A tuple of cast types (a server's `type Casts`) that can cross nodes.
pub trait RemoteCasts {
    /// Appends a registration for each cast type, named by its Rust type path.
    fn collect(out: &mut Vec<RemoteMessageType>);
}

macro_rules! remote_sets {
    ($($t:ident),*) => {
        impl<$($t),*> RemoteCalls for ($($t,)*)
        where
            $($t: joerl_core::gen_server::Request + Serialize + DeserializeOwned,
              $t::Reply: Serialize + DeserializeOwned,)*
        {
            #[allow(unused_variables)]
            fn collect(out: &mut Vec<RemoteMessageType>) {
                $(
                    out.push(RemoteMessageType::of::<$t>(std::any::type_name::<$t>()));
                    out.push(RemoteMessageType::of::<$t::Reply>(
                        std::any::type_name::<$t::Reply>(),
                    ));
                )*
            }
        }

        impl<$($t),*> RemoteCasts for ($($t,)*)
        where
            $($t: Serialize + DeserializeOwned + Send + 'static,)*
        {
            #[allow(unused_variables)]
            fn collect(out: &mut Vec<RemoteMessageType>) {
                $(out.push(RemoteMessageType::of::<$t>(std::any::type_name::<$t>()));)*
            }
        }
    };
}

remote_sets!();
remote_sets!(A);
remote_sets!(A, B);
remote_sets!(A, B, C);
remote_sets!(A, B, C, D);
remote_sets!(A, B, C, D, E);
remote_sets!(A, B, C, D, E, F);
remote_sets!(A, B, C, D, E, F, G);
remote_sets!(A, B, C, D, E, F, G, H);
remote_sets!(A, B, C, D, E, F, G, H, I);
remote_sets!(A, B, C, D, E, F, G, H, I, J);
remote_sets!(A, B, C, D, E, F, G, H, I, J, K);
remote_sets!(A, B, C, D, E, F, G, H, I, J, K, L);

/// Registers everything a gen_server sends and receives for other nodes, in
/// one line next to the server: each request of its `type Calls`, each
/// request's reply type, and each cast of its `type Casts`. They are named on
/// the wire by their Rust type paths (`std::any::type_name`), so both nodes
/// must build them from the same crate versions; a type also registered with
/// [`remote_message!`](crate::remote_message) keeps that name.
///
/// ```
/// use joerl_dist::gen_server::{CallResponse, GenServer, HandleCall, ReplyTo, Request};
/// use joerl_dist::ActorContext;
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct GetJob;
/// impl Request for GetJob { type Reply = Option<u64>; }
///
/// struct Jobs(Vec<u64>);
/// impl GenServer for Jobs { type Calls = (GetJob,); type Casts = (); }
/// impl HandleCall<GetJob> for Jobs {
///     async fn handle_call(&mut self, _: GetJob, _: ReplyTo<Option<u64>>, _: &mut ActorContext) -> CallResponse<Option<u64>> {
///         CallResponse::Reply(self.0.pop())
///     }
/// }
/// joerl_dist::remote_server!(Jobs);
///
/// assert!(joerl_dist::registry::is_registered::<GetJob>());
/// assert!(joerl_dist::registry::is_registered::<Option<u64>>());
/// ```
#[macro_export]
macro_rules! remote_server {
    ($server:ty) => {
        $crate::inventory::submit! {
            $crate::registry::RemoteServerTypes {
                server: ::std::any::type_name::<$server>,
                types: |out| {
                    <<$server as $crate::gen_server::GenServer>::Calls
                        as $crate::registry::RemoteCalls>::collect(out);
                    <<$server as $crate::gen_server::GenServer>::Casts
                        as $crate::registry::RemoteCasts>::collect(out);
                },
            }
        }
    };
}

/// The wire id of a registered name: 64-bit FNV-1a of its UTF-8 bytes.
pub const fn wire_id(name: &str) -> u64 {
    let bytes = name.as_bytes();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
}

/// A conflict found while building the tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryConflict {
    /// The contested name (or, for a hash collision, the first name).
    pub name: String,
    /// The Rust type registered first.
    pub first: String,
    /// The Rust type (or name) that conflicts with it.
    pub second: String,
}

impl std::fmt::Display for RegistryConflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "message name {:?} is claimed by both {} and {}; give each type its own name in remote_message!",
            self.name, self.first, self.second
        )
    }
}

pub(crate) struct Tables {
    by_type: HashMap<TypeId, (&'static RemoteMessageType, u64), FxBuildHasher>,
    by_wire: HashMap<u64, &'static RemoteMessageType, FxBuildHasher>,
    pub(crate) conflicts: Vec<RegistryConflict>,
}

static TABLES: OnceLock<Tables> = OnceLock::new();

pub(crate) fn tables() -> &'static Tables {
    TABLES.get_or_init(|| {
        let mut by_type = HashMap::with_hasher(FxBuildHasher::default());
        let mut by_wire: HashMap<u64, &'static RemoteMessageType, FxBuildHasher> =
            HashMap::with_hasher(FxBuildHasher::default());
        let mut conflicts = Vec::new();
        // Explicit names first; a server's types only where no explicit
        // registration (nor another server) gave the type a name already.
        let mut explicit: std::collections::HashSet<TypeId> = std::collections::HashSet::new();
        for entry in inventory::iter::<RemoteMessageType> {
            explicit.insert((entry.type_id)());
        }
        let mut derived = Vec::new();
        for server in inventory::iter::<RemoteServerTypes> {
            (server.types)(&mut derived);
        }
        let mut seen = explicit;
        let derived: Vec<&'static RemoteMessageType> = derived
            .into_iter()
            .filter(|e| seen.insert((e.type_id)()))
            .map(|e| &*Box::leak(Box::new(e)))
            .collect();
        let entries = inventory::iter::<RemoteMessageType>
            .into_iter()
            .chain(derived);
        for entry in entries {
            let id = wire_id(entry.name);
            match by_wire.get(&id) {
                Some(existing) if (existing.type_id)() == (entry.type_id)() => continue,
                Some(existing) => {
                    conflicts.push(RegistryConflict {
                        name: existing.name.to_string(),
                        first: (existing.type_name)().to_string(),
                        second: if existing.name == entry.name {
                            (entry.type_name)().to_string()
                        } else {
                            format!(
                                "{} (registered as {:?}, same wire id)",
                                (entry.type_name)(),
                                entry.name
                            )
                        },
                    });
                    continue;
                }
                None => {}
            }
            by_wire.insert(id, entry);
            by_type.entry((entry.type_id)()).or_insert((entry, id));
        }
        Tables {
            by_type,
            by_wire,
            conflicts,
        }
    })
}

impl Tables {
    /// The registration and wire id of a value's type.
    pub(crate) fn by_type(&self, id: TypeId) -> Option<(&'static RemoteMessageType, u64)> {
        self.by_type.get(&id).copied()
    }

    /// The registration behind a wire id.
    pub(crate) fn by_wire(&self, id: u64) -> Option<&'static RemoteMessageType> {
        self.by_wire.get(&id).copied()
    }
}

/// Conflicting registrations (two types under one name), as reported at start-up.
pub fn conflicts() -> Vec<RegistryConflict> {
    tables().conflicts.clone()
}

/// True if values of type `T` can be sent to other nodes.
pub fn is_registered<T: 'static>() -> bool {
    tables().by_type(TypeId::of::<T>()).is_some()
}

/// Every registered name with its Rust type name, sorted by name.
pub fn registered_names() -> Vec<(&'static str, &'static str)> {
    let mut v: Vec<_> = tables()
        .by_wire
        .values()
        .map(|e| (e.name, (e.type_name)()))
        .collect();
    v.sort();
    v
}

// Types every node can send without registering them.
crate::remote_message!(String, "std::String");
crate::remote_message!(bool, "std::bool");
crate::remote_message!(u8, "std::u8");
crate::remote_message!(u16, "std::u16");
crate::remote_message!(u32, "std::u32");
crate::remote_message!(u64, "std::u64");
crate::remote_message!(i32, "std::i32");
crate::remote_message!(i64, "std::i64");
crate::remote_message!(f64, "std::f64");
crate::remote_message!((), "std::unit");
crate::remote_message!(Vec<u8>, "std::Vec<u8>");
crate::remote_message!(joerl_core::Pid, "joerl::Pid");
// An exit reason crosses in the schema of `wire_signal.rs`, not its serde derive.
inventory::submit! {
    RemoteMessageType {
        name: "joerl::ExitReason",
        type_name: std::any::type_name::<joerl_core::ExitReason>,
        type_id: std::any::TypeId::of::<joerl_core::ExitReason>,
        encode: crate::wire_signal::encode_reason_message,
        decode: crate::wire_signal::decode_reason_message,
        to_term: reason_to_term,
    }
}

/// An exit reason as Erlang's term for it (`normal`, `killed`, ..).
fn reason_to_term(
    value: &dyn Any,
    _names: &dyn crate::erlang::serde_term::PidNames,
) -> Result<crate::erlang::Term, crate::erlang::serde_term::SerdeTermError> {
    value
        .downcast_ref::<joerl_core::ExitReason>()
        .map(crate::erlang::peer::reason_term)
        .ok_or_else(|| {
            crate::erlang::serde_term::SerdeTermError::Custom(
                "internal error: the ExitReason entry got a value of another type".into(),
            )
        })
}
crate::remote_message!(joerl_core::gen_server::BadRequest, "joerl::BadRequest");
crate::remote_message!(joerl_core::gen_server::ReplyLost, "joerl::ReplyLost");
crate::remote_message!(crate::Blob, "joerl::Blob");

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Probe {
        a: u32,
        b: String,
    }
    crate::remote_message!(Probe, "joerl::test::Probe");

    #[test]
    fn registered_type_round_trips() {
        let (entry, id) = tables().by_type(TypeId::of::<Probe>()).expect("registered");
        assert_eq!(id, wire_id("joerl::test::Probe"));
        let mut buf = Vec::new();
        (entry.encode)(
            &Probe {
                a: 7,
                b: "x".into(),
            },
            &mut buf,
        )
        .unwrap();
        let back = (tables().by_wire(id).unwrap().decode)(&buf, 1 << 20).unwrap();
        assert_eq!(
            *back.downcast::<Probe>().unwrap(),
            Probe {
                a: 7,
                b: "x".into()
            }
        );
    }

    #[test]
    fn wire_id_is_fnv1a_64() {
        assert_eq!(wire_id(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(wire_id("a"), 0xaf63_dc4c_8601_ec8c);
    }
}
