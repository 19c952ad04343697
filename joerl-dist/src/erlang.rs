//! The Erlang dialect: Erlang/OTP nodes as peers, and Erlang terms.
//!
//! A joerl node speaks Erlang's distribution protocol beside its own, on the
//! same listening port (an accepted connection says which by its first
//! bytes) and toward Erlang nodes it reaches (EPMD says which nodes are
//! Erlang's: a joerl node's entry carries [`JOERL_EPMD_MARK`]). Messages
//! from Erlang arrive as [`Term`]s; a joerl actor sends a `Term`, or a type
//! registered with `remote_message!`, which crosses through serde
//! ([`serde_term`]). Calls cross both ways: a joerl gen_server that lists
//! `Term` in its `Calls` answers `gen_server:call/2` from Erlang, and a joerl
//! call with a `Term` request reaches an Erlang gen_server.
//!
//! Modules, bottom up; only `dist` does I/O: [`term`] (the dynamic value),
//! [`etf`] (the External Term Format, `term_to_binary/1` bytes),
//! [`serde_term`] (serde between Rust types and terms), [`handshake`]
//! (Erlang's MD5 challenge handshake, version 6, a state machine),
//! [`control`] (control messages as a typed enum), [`wire`] (framing,
//! distribution headers, the atom cache, fragments), `peer` (one Erlang node:
//! its buffer, its links and monitors, the translation of joerl's messages
//! and signals), `convert` (registered Rust types as terms) and `dist` (the
//! node's Erlang peers, dial, accept, reader, writer, ticks).

pub mod control;
pub(crate) mod convert;
pub(crate) mod dist;
pub mod etf;
pub mod handshake;
pub(crate) mod peer;
pub mod serde_term;
pub mod term;
pub mod wire;

pub use dist::{Dialect, JOERL_EPMD_MARK};
pub use etf::{DecodeLimits, DecodeOptions, EtfError, decode, decode_with, encode, encode_into};
pub use serde_term::{PidNames, SerdeTermError, from_term, from_term_owned, to_term, to_term_with};
pub use term::{Atom, BigInt, ErlPid, ErlPort, ErlRef, Term, TermError};

impl joerl_core::gen_server::Request for Term {
    /// An Erlang call's reply is a term too.
    type Reply = Term;
}

/// Erlang's distribution capability flags (`DFLAG_*`), as in the
/// distribution protocol's documentation.
pub mod flags {
    /// The node is published (a normal, not a hidden, node).
    pub const PUBLISHED: u64 = 0x1;
    /// Extended (3 × 32 bits) references. Mandatory.
    pub const EXTENDED_REFERENCES: u64 = 0x4;
    /// Distributed process monitoring.
    pub const DIST_MONITOR: u64 = 0x8;
    /// Separate tags for funs. Mandatory.
    pub const FUN_TAGS: u64 = 0x10;
    /// Distributed monitoring of registered names.
    pub const DIST_MONITOR_NAME: u64 = 0x20;
    /// `NEW_FUN_EXT`. Mandatory.
    pub const NEW_FUN_TAGS: u64 = 0x80;
    /// Extended pids and ports. Mandatory.
    pub const EXTENDED_PIDS_PORTS: u64 = 0x100;
    /// `EXPORT_EXT`. Mandatory.
    pub const EXPORT_PTR_TAG: u64 = 0x200;
    /// `BIT_BINARY_EXT`. Mandatory.
    pub const BIT_BINARIES: u64 = 0x400;
    /// `NEW_FLOAT_EXT`. Mandatory.
    pub const NEW_FLOATS: u64 = 0x800;
    /// Unicode I/O.
    pub const UNICODE_IO: u64 = 0x1000;
    /// The atom cache in the distribution header (not offered by joerl; its
    /// reader handles cache references all the same).
    pub const DIST_HDR_ATOM_CACHE: u64 = 0x2000;
    /// `SMALL_ATOM_EXT`.
    pub const SMALL_ATOM_TAGS: u64 = 0x4000;
    /// UTF-8 atoms. Mandatory.
    pub const UTF8_ATOMS: u64 = 0x10000;
    /// `MAP_EXT`. Mandatory.
    pub const MAP_TAG: u64 = 0x20000;
    /// 32-bit creations (`NEW_PID_EXT`, `NEW_PORT_EXT`, `NEWER_REFERENCE_EXT`). Mandatory.
    pub const BIG_CREATION: u64 = 0x40000;
    /// `SEND_SENDER` instead of `SEND`.
    pub const SEND_SENDER: u64 = 0x80000;
    /// Any term as a sequential trace label.
    pub const BIG_SEQTRACE_LABELS: u64 = 0x100000;
    /// `PAYLOAD_EXIT`, `PAYLOAD_EXIT2`, `PAYLOAD_MONITOR_P_EXIT`.
    pub const EXIT_PAYLOAD: u64 = 0x400000;
    /// Fragmented messages.
    pub const FRAGMENTS: u64 = 0x800000;
    /// The version 6 handshake of OTP 23. Mandatory.
    pub const HANDSHAKE_23: u64 = 0x1000000;
    /// The new link protocol (`UNLINK_ID`). Mandatory from OTP 26.
    pub const UNLINK_ID: u64 = 0x2000000;
    /// `SPAWN_REQUEST` and `SPAWN_REPLY` (not offered by joerl).
    pub const SPAWN: u64 = 1 << 32;
    /// Dynamic node names (not offered by joerl).
    pub const NAME_ME: u64 = 1 << 33;
    /// Full 32-bit pid fields, 64-bit ports, 5-word references. Mandatory from OTP 26.
    pub const V4_NC: u64 = 1 << 34;
    /// Process aliases (`ALIAS_SEND`).
    pub const ALIAS: u64 = 1 << 35;
    /// Every capability mandatory in OTP 25.
    pub const MANDATORY_25_DIGEST: u64 = 1 << 36;
}
