//! The EPMD wire format: parsing and encoding, with no I/O.
//!
//! Everything here works on byte slices so it can be unit-tested on bytes and
//! fuzzed without sockets (the same split as mini-redis's `frame` module: the
//! server and client own the sockets, this module owns the bytes).
//!
//! # Framing
//!
//! Every request is a 2-byte big-endian length followed by that many bytes; the
//! first of them is the request tag. [`check_frame`] finds a complete request in
//! a read buffer, [`decode_request`] turns its bytes into a [`Request`].
//!
//! # Erlang requests
//!
//! The tags and layouts are those of the "Distribution Protocol" chapter of
//! the ERTS user's guide and of `erts/epmd/src/epmd_srv.c`, checked byte for
//! byte against Debian's `epmd` (OTP 25): `ALIVE2_REQ` (120), `PORT_PLEASE2_REQ`
//! (122), `NAMES_REQ` (110), `DUMP_REQ` (100), `KILL_REQ` (107), `STOP_REQ` (115).
//! Erlang replies have no length prefix; the daemon closes the connection after
//! them (except after `ALIVE2`, whose connection holds the registration).
//!
//! # joerl requests
//!
//! joerl's own requests reuse the framing on tags Erlang does not use
//! (`0xA0..=0xA5`). The body is `tag, version, bincode payload`. Replies are
//! framed with a 4-byte big-endian length and carry [`JOERL_REPLY`], the
//! version and a bincode [`JoerlReply`]. A request with a version this build does
//! not speak gets a [`JOERL_VERSION_REPLY`] naming the versions it does speak,
//! so the wire format can change later without confusing older peers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{ProtocolError, RegistryError};

/// Tag of `ALIVE2_REQ`: register an Erlang node.
pub const ALIVE2_REQ: u8 = 120;
/// Tag of `ALIVE2_RESP`: registration reply with a 16-bit creation (nodes whose highest version is below 6).
pub const ALIVE2_RESP: u8 = 121;
/// Tag of `ALIVE2_X_RESP`: registration reply with a 32-bit creation (highest version 6 or later).
pub const ALIVE2_X_RESP: u8 = 118;
/// Tag of `PORT_PLEASE2_REQ`: look up a node's distribution port.
pub const PORT_PLEASE2_REQ: u8 = 122;
/// Tag of `PORT2_RESP`: reply to `PORT_PLEASE2_REQ`.
pub const PORT2_RESP: u8 = 119;
/// Tag of `NAMES_REQ`: list registered names and ports.
pub const NAMES_REQ: u8 = 110;
/// Tag of `DUMP_REQ`: list registered and old names (loopback peers only).
pub const DUMP_REQ: u8 = 100;
/// Tag of `KILL_REQ`: stop the daemon (loopback peers only).
pub const KILL_REQ: u8 = 107;
/// Tag of `STOP_REQ`: forcibly unregister a name (loopback peers only, relaxed mode only).
pub const STOP_REQ: u8 = 115;

/// joerl request tag: register a node (payload [`RegisterRequest`]).
pub const JOERL_REGISTER_REQ: u8 = 0xA0;
/// joerl request tag: renew a lease (payload [`KeepAliveRequest`]).
pub const JOERL_KEEPALIVE_REQ: u8 = 0xA1;
/// joerl request tag: remove a registration (payload [`UnregisterRequest`]).
pub const JOERL_UNREGISTER_REQ: u8 = 0xA2;
/// joerl request tag: look up one node with metadata (payload [`LookupRequest`]).
pub const JOERL_LOOKUP_REQ: u8 = 0xA3;
/// joerl request tag: list all nodes with metadata (payload [`ListRequest`]).
pub const JOERL_LIST_REQ: u8 = 0xA4;
/// joerl request tag: ping the daemon (payload [`PingRequest`]).
pub const JOERL_PING_REQ: u8 = 0xA5;
/// Tag of every joerl reply (payload [`JoerlReply`]).
pub const JOERL_REPLY: u8 = 0xB0;
/// Tag of the reply to a joerl request whose version the daemon does not speak:
/// followed by the lowest and the highest version the daemon speaks (one byte each).
pub const JOERL_VERSION_REPLY: u8 = 0xBF;
/// Version of the joerl payloads this build writes and reads.
pub const JOERL_PROTOCOL_VERSION: u8 = 1;

/// Node type byte of a normal Erlang node (`'M'`).
pub const NODE_TYPE_NORMAL: u8 = 77;
/// Node type byte of a hidden node (`'H'`).
pub const NODE_TYPE_HIDDEN: u8 = 72;
/// Protocol byte for TCP/IPv4, the only one Erlang defines.
pub const PROTOCOL_TCP_IPV4: u8 = 0;
/// Longest node name in bytes (epmd's `MAXSYMLEN`: 255 characters of up to 4 UTF-8 bytes).
pub const MAX_NAME_BYTES: usize = 255 * 4;
/// Longest node name in characters (the length of an atom).
pub const MAX_NAME_CHARS: usize = 255;
/// Longest `Extra` field of `ALIVE2_REQ` in bytes (also `MAXSYMLEN` in epmd).
pub const MAX_EXTRA_BYTES: usize = 255 * 4;
/// Creation the real epmd puts in a refused `ALIVE2` reply.
pub const CREATION_ON_REFUSAL: u32 = 99;
/// Largest request body the real epmd accepts (its input buffer is `3 * MAXSYMLEN` bytes,
/// including the length prefix and one spare byte).
pub const EPMD_MAX_REQUEST_BYTES: usize = 3 * MAX_NAME_BYTES - 3;
/// Largest possible request body (the length prefix is 16 bits).
pub const MAX_FRAME_BODY: usize = u16::MAX as usize;

/// Reply to `KILL_REQ` when the daemon stops.
pub const KILL_OK: &[u8] = b"OK";
/// Reply to `KILL_REQ` when nodes are registered (and the daemon keeps running).
pub const KILL_REFUSED: &[u8] = b"NO";
/// Reply to `STOP_REQ` when the name was registered and has been removed.
pub const STOP_OK: &[u8] = b"STOPPED";
/// Reply to `STOP_REQ` when the name was not registered. The real epmd writes
/// `NOEXIST` and then falls through to also write `STOPPED`; clients see both.
pub const STOP_NOEXIST: &[u8] = b"NOEXISTSTOPPED";
/// Reply to `PORT_PLEASE2_REQ` for an unknown name.
pub const PORT2_MISS: [u8; 2] = [PORT2_RESP, 1];

// ---------------------------------------------------------------------------
// Framing
// ---------------------------------------------------------------------------

/// Looks for one complete request at the start of `buf`.
///
/// Returns `Ok(Some(body_len))` when `buf[2..2 + body_len]` is a complete
/// request body, `Ok(None)` when more bytes are needed, and an error as soon as
/// the length prefix is known to be unacceptable (zero, or larger than
/// `max_body`), so no buffer ever grows past the limit.
pub fn check_frame(buf: &[u8], max_body: usize) -> Result<Option<usize>, ProtocolError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let len = usize::from(u16::from_be_bytes([buf[0], buf[1]]));
    if len == 0 {
        return Err(ProtocolError::EmptyRequest);
    }
    if len > max_body {
        return Err(ProtocolError::RequestTooLarge { len, max: max_body });
    }
    if buf.len() - 2 < len {
        return Ok(None);
    }
    Ok(Some(len))
}

/// Prefixes `body` with its 2-byte big-endian length.
pub fn frame_request(body: &[u8]) -> Result<Vec<u8>, ProtocolError> {
    let len = u16::try_from(body.len()).map_err(|_| ProtocolError::Encode {
        what: "request",
        reason: format!("{} bytes do not fit the 16-bit length prefix", body.len()),
    })?;
    let mut out = Vec::with_capacity(body.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
    Ok(out)
}

// ---------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------

/// The registration fields every node advertises to Erlang peers
/// (what `PORT2_RESP` returns besides the port).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DistInfo {
    /// Node type: [`NODE_TYPE_NORMAL`] or [`NODE_TYPE_HIDDEN`].
    pub node_type: u8,
    /// Transport protocol: [`PROTOCOL_TCP_IPV4`].
    pub protocol: u8,
    /// Highest distribution protocol version the node speaks (6 since OTP 23).
    pub highest_version: u16,
    /// Lowest distribution protocol version the node speaks.
    pub lowest_version: u16,
    /// Opaque `Extra` bytes (at most [`MAX_EXTRA_BYTES`]).
    pub extra: Vec<u8>,
}

impl Default for DistInfo {
    /// A normal node over TCP/IPv4 speaking distribution versions 5 to 6, no extra bytes.
    fn default() -> Self {
        Self {
            node_type: NODE_TYPE_NORMAL,
            protocol: PROTOCOL_TCP_IPV4,
            highest_version: 6,
            lowest_version: 5,
            extra: Vec::new(),
        }
    }
}

/// A decoded `ALIVE2_REQ`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alive2Request {
    /// Distribution port of the node.
    pub port: u16,
    /// Node name (the part before `@`).
    pub name: String,
    /// Type, protocol, versions and extra bytes.
    pub dist: DistInfo,
}

impl Alive2Request {
    /// Encodes the request body (without the length prefix).
    pub fn encode_body(&self) -> Result<Vec<u8>, ProtocolError> {
        let name_len = u16::try_from(self.name.len()).map_err(|_| ProtocolError::Encode {
            what: "ALIVE2_REQ",
            reason: "node name longer than 65535 bytes".into(),
        })?;
        let extra_len =
            u16::try_from(self.dist.extra.len()).map_err(|_| ProtocolError::Encode {
                what: "ALIVE2_REQ",
                reason: "extra longer than 65535 bytes".into(),
            })?;
        let mut out = Vec::with_capacity(13 + self.name.len() + self.dist.extra.len());
        out.push(ALIVE2_REQ);
        out.extend_from_slice(&self.port.to_be_bytes());
        out.push(self.dist.node_type);
        out.push(self.dist.protocol);
        out.extend_from_slice(&self.dist.highest_version.to_be_bytes());
        out.extend_from_slice(&self.dist.lowest_version.to_be_bytes());
        out.extend_from_slice(&name_len.to_be_bytes());
        out.extend_from_slice(self.name.as_bytes());
        out.extend_from_slice(&extra_len.to_be_bytes());
        out.extend_from_slice(&self.dist.extra);
        Ok(out)
    }
}

/// A request, decoded from one frame body.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// `ALIVE2_REQ` with acceptable fields.
    Alive2(Alive2Request),
    /// `ALIVE2_REQ` that is well framed but whose name or extra field the real
    /// epmd refuses with an error reply (rather than by closing the connection).
    Alive2Rejected {
        /// Highest version from the request (selects the reply format).
        highest_version: u16,
        /// Why it was refused (for the log).
        reason: String,
    },
    /// `PORT_PLEASE2_REQ`.
    PortPlease2 {
        /// Name to look up.
        name: String,
    },
    /// `NAMES_REQ`.
    Names,
    /// `DUMP_REQ`.
    Dump,
    /// `KILL_REQ`.
    Kill,
    /// `STOP_REQ`.
    Stop {
        /// Raw name bytes (up to the first NUL, as the real epmd reads them).
        name: Vec<u8>,
    },
    /// One of joerl's own requests.
    Joerl(JoerlRequest),
}

impl Request {
    /// Encodes the request as a complete frame (length prefix included).
    pub fn encode(&self) -> Result<Vec<u8>, ProtocolError> {
        let body = match self {
            Request::Alive2(req) => req.encode_body()?,
            Request::Alive2Rejected { .. } => {
                return Err(ProtocolError::Encode {
                    what: "request",
                    reason: "Alive2Rejected is a decoding outcome, not a request".into(),
                });
            }
            Request::PortPlease2 { name } => {
                let mut body = Vec::with_capacity(1 + name.len());
                body.push(PORT_PLEASE2_REQ);
                body.extend_from_slice(name.as_bytes());
                body
            }
            Request::Names => vec![NAMES_REQ],
            Request::Dump => vec![DUMP_REQ],
            Request::Kill => vec![KILL_REQ],
            Request::Stop { name } => {
                let mut body = vec![STOP_REQ];
                body.extend_from_slice(name);
                body
            }
            Request::Joerl(req) => req.encode_body()?,
        };
        frame_request(&body)
    }
}

/// Decodes one request body (the bytes after the length prefix).
///
/// Follows the real epmd: fields it ignores (bytes after a `NAMES_REQ` tag,
/// bytes after the declared `Extra` of `ALIVE2_REQ`) are ignored here too.
/// Errors mean "close the connection without a reply", which is what epmd
/// does with such input.
pub fn decode_request(body: &[u8]) -> Result<Request, ProtocolError> {
    let Some(&tag) = body.first() else {
        return Err(ProtocolError::EmptyRequest);
    };
    match tag {
        ALIVE2_REQ => decode_alive2(body),
        PORT_PLEASE2_REQ => decode_port_please2(body),
        NAMES_REQ => Ok(Request::Names),
        DUMP_REQ => Ok(Request::Dump),
        KILL_REQ => Ok(Request::Kill),
        STOP_REQ => {
            let rest = &body[1..];
            let name = match rest.iter().position(|&b| b == 0) {
                Some(end) => &rest[..end],
                None => rest,
            };
            if rest.is_empty() {
                return Err(ProtocolError::Truncated {
                    what: "STOP_REQ",
                    needed: 2,
                    got: body.len(),
                });
            }
            Ok(Request::Stop {
                name: name.to_vec(),
            })
        }
        JOERL_REGISTER_REQ..=JOERL_PING_REQ => JoerlRequest::decode_body(body).map(Request::Joerl),
        other => Err(ProtocolError::UnknownTag(other)),
    }
}

fn be16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

fn decode_alive2(body: &[u8]) -> Result<Request, ProtocolError> {
    // Fixed part: tag(1) port(2) type(1) proto(1) high(2) low(2) nlen(2), then
    // name, elen(2), extra. epmd demands at least 14 bytes.
    if body.len() <= 13 {
        return Err(ProtocolError::Truncated {
            what: "ALIVE2_REQ",
            needed: 14,
            got: body.len(),
        });
    }
    let port = be16(body, 1);
    let node_type = body[3];
    let protocol = body[4];
    let highest_version = be16(body, 5);
    let lowest_version = be16(body, 7);
    let name_len = usize::from(be16(body, 9));
    if name_len + 13 > body.len() {
        return Err(ProtocolError::Truncated {
            what: "ALIVE2_REQ node name",
            needed: name_len + 13,
            got: body.len(),
        });
    }
    let extra_len = usize::from(be16(body, 11 + name_len));
    if extra_len + name_len + 13 > body.len() {
        return Err(ProtocolError::Truncated {
            what: "ALIVE2_REQ extra",
            needed: extra_len + name_len + 13,
            got: body.len(),
        });
    }
    let name_bytes = &body[11..11 + name_len];
    if name_bytes.contains(&0) {
        return Err(ProtocolError::Malformed {
            what: "ALIVE2_REQ",
            reason: "node name contains a NUL byte".into(),
        });
    }
    let extra = &body[13 + name_len..13 + name_len + extra_len];
    let rejected = |reason: String| {
        Ok(Request::Alive2Rejected {
            highest_version,
            reason,
        })
    };
    if let Err(reason) = validate_name_bytes(name_bytes) {
        return rejected(reason);
    }
    if extra_len > MAX_EXTRA_BYTES {
        return rejected(format!(
            "extra field of {extra_len} bytes exceeds {MAX_EXTRA_BYTES}"
        ));
    }
    let name = String::from_utf8(name_bytes.to_vec()).expect("validated as UTF-8");
    Ok(Request::Alive2(Alive2Request {
        port,
        name,
        dist: DistInfo {
            node_type,
            protocol,
            highest_version,
            lowest_version,
            extra: extra.to_vec(),
        },
    }))
}

/// Checks a node name the way epmd does: 1 to 255 characters of valid UTF-8,
/// at most [`MAX_NAME_BYTES`] bytes, and no NUL byte.
pub fn validate_name(name: &str) -> Result<(), String> {
    validate_name_bytes(name.as_bytes())
}

fn validate_name_bytes(name: &[u8]) -> Result<(), String> {
    if name.is_empty() {
        return Err("node name is empty".into());
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(format!(
            "node name of {} bytes exceeds {MAX_NAME_BYTES}",
            name.len()
        ));
    }
    if name.contains(&0) {
        return Err("node name contains a NUL byte".into());
    }
    let text = std::str::from_utf8(name).map_err(|_| "node name is not valid UTF-8".to_string())?;
    let chars = text.chars().count();
    if chars > MAX_NAME_CHARS {
        return Err(format!(
            "node name of {chars} characters exceeds {MAX_NAME_CHARS}"
        ));
    }
    Ok(())
}

fn decode_port_please2(body: &[u8]) -> Result<Request, ProtocolError> {
    let mut name = &body[1..];
    // epmd drops one trailing NUL (old clients sent C strings).
    if let Some((&0, rest)) = name.split_last() {
        name = rest;
    }
    if name.is_empty() {
        return Err(ProtocolError::Truncated {
            what: "PORT_PLEASE2_REQ",
            needed: 2,
            got: body.len(),
        });
    }
    validate_name_bytes(name).map_err(|reason| ProtocolError::Malformed {
        what: "PORT_PLEASE2_REQ",
        reason,
    })?;
    Ok(Request::PortPlease2 {
        name: String::from_utf8(name.to_vec()).expect("validated as UTF-8"),
    })
}

// ---------------------------------------------------------------------------
// Erlang replies
// ---------------------------------------------------------------------------

/// Reply to `ALIVE2_REQ`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Alive2Reply {
    /// 0 on success; epmd uses 1 for every refusal.
    pub result: u8,
    /// Creation assigned to the node ([`CREATION_ON_REFUSAL`] on refusal).
    pub creation: u32,
    /// `true` for `ALIVE2_X_RESP` (32-bit creation), `false` for `ALIVE2_RESP` (16-bit).
    pub extended: bool,
}

impl Alive2Reply {
    /// The reply epmd sends to a node whose highest version is `highest_version`:
    /// `ALIVE2_X_RESP` for 6 and later, `ALIVE2_RESP` before.
    pub fn for_version(highest_version: u16, result: u8, creation: u32) -> Self {
        Self {
            result,
            creation,
            extended: highest_version >= 6,
        }
    }

    /// Encodes the reply (4 or 6 bytes). A 16-bit reply keeps the low 16 bits of the creation.
    pub fn encode(&self) -> Vec<u8> {
        if self.extended {
            let mut out = vec![ALIVE2_X_RESP, self.result];
            out.extend_from_slice(&self.creation.to_be_bytes());
            out
        } else {
            let mut out = vec![ALIVE2_RESP, self.result];
            out.extend_from_slice(&(self.creation as u16).to_be_bytes());
            out
        }
    }

    /// Decodes a reply from the start of `buf`: `Ok(None)` if more bytes are needed.
    pub fn decode(buf: &[u8]) -> Result<Option<(Self, usize)>, ProtocolError> {
        let Some(&tag) = buf.first() else {
            return Ok(None);
        };
        let (extended, len) = match tag {
            ALIVE2_X_RESP => (true, 6),
            ALIVE2_RESP => (false, 4),
            got => {
                return Err(ProtocolError::UnexpectedReplyTag {
                    expected: ALIVE2_X_RESP,
                    got,
                });
            }
        };
        if buf.len() < len {
            return Ok(None);
        }
        let creation = if extended {
            u32::from_be_bytes([buf[2], buf[3], buf[4], buf[5]])
        } else {
            u32::from(be16(buf, 2))
        };
        Ok(Some((
            Self {
                result: buf[1],
                creation,
                extended,
            },
            len,
        )))
    }
}

/// Successful reply to `PORT_PLEASE2_REQ`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortPleaseReply {
    /// Distribution port of the node.
    pub port: u16,
    /// Node name as registered.
    pub name: String,
    /// Type, protocol, versions and extra bytes.
    pub dist: DistInfo,
}

impl PortPleaseReply {
    /// Encodes a `PORT2_RESP` with result 0 into `out`.
    pub fn encode_into(port: u16, name: &str, dist: &DistInfo, out: &mut Vec<u8>) {
        out.reserve(14 + name.len() + dist.extra.len());
        out.push(PORT2_RESP);
        out.push(0);
        out.extend_from_slice(&port.to_be_bytes());
        out.push(dist.node_type);
        out.push(dist.protocol);
        out.extend_from_slice(&dist.highest_version.to_be_bytes());
        out.extend_from_slice(&dist.lowest_version.to_be_bytes());
        // Names and extras are bounded by MAX_NAME_BYTES / MAX_EXTRA_BYTES when registered.
        out.extend_from_slice(&(name.len() as u16).to_be_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&(dist.extra.len() as u16).to_be_bytes());
        out.extend_from_slice(&dist.extra);
    }

    /// Encodes this reply.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        Self::encode_into(self.port, &self.name, &self.dist, &mut out);
        out
    }

    /// Decodes a complete `PORT2_RESP` (the daemon closes the connection after it):
    /// `Ok(None)` for the error reply (unknown name).
    pub fn decode(buf: &[u8]) -> Result<Option<Self>, ProtocolError> {
        let truncated = |needed: usize| ProtocolError::Truncated {
            what: "PORT2_RESP",
            needed,
            got: buf.len(),
        };
        if buf.len() < 2 {
            return Err(truncated(2));
        }
        if buf[0] != PORT2_RESP {
            return Err(ProtocolError::UnexpectedReplyTag {
                expected: PORT2_RESP,
                got: buf[0],
            });
        }
        if buf[1] != 0 {
            return Ok(None);
        }
        if buf.len() < 12 {
            return Err(truncated(12));
        }
        let name_len = usize::from(be16(buf, 10));
        if buf.len() < 14 + name_len {
            return Err(truncated(14 + name_len));
        }
        let name = std::str::from_utf8(&buf[12..12 + name_len])
            .map_err(|_| ProtocolError::Malformed {
                what: "PORT2_RESP",
                reason: "node name is not valid UTF-8".into(),
            })?
            .to_string();
        let extra_len = usize::from(be16(buf, 12 + name_len));
        let end = 14 + name_len + extra_len;
        if buf.len() < end {
            return Err(truncated(end));
        }
        if buf.len() > end {
            return Err(ProtocolError::Malformed {
                what: "PORT2_RESP",
                reason: format!("{} bytes after the extra field", buf.len() - end),
            });
        }
        Ok(Some(Self {
            port: be16(buf, 2),
            name,
            dist: DistInfo {
                node_type: buf[4],
                protocol: buf[5],
                highest_version: be16(buf, 6),
                lowest_version: be16(buf, 8),
                extra: buf[14 + name_len..end].to_vec(),
            },
        }))
    }
}

/// Reply to `NAMES_REQ`: the daemon's own port, then one line per registered node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamesReply {
    /// Port the daemon listens on (sent as 4 bytes).
    pub epmd_port: u32,
    /// `(name, port)` of every registered node, in the daemon's order.
    pub nodes: Vec<(String, u16)>,
}

impl NamesReply {
    /// Appends the 4-byte header (the daemon's port) to `out`.
    pub fn encode_header(epmd_port: u32, out: &mut Vec<u8>) {
        out.extend_from_slice(&epmd_port.to_be_bytes());
    }

    /// Appends one `name NAME at port PORT\n` line to `out`.
    pub fn encode_line(name: &str, port: u16, out: &mut Vec<u8>) {
        out.extend_from_slice(b"name ");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b" at port ");
        out.extend_from_slice(port.to_string().as_bytes());
        out.push(b'\n');
    }

    /// Encodes the whole reply.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        Self::encode_header(self.epmd_port, &mut out);
        for (name, port) in &self.nodes {
            Self::encode_line(name, *port, &mut out);
        }
        out
    }

    /// Decodes a complete reply (the daemon closes the connection after it).
    pub fn decode(buf: &[u8]) -> Result<Self, ProtocolError> {
        if buf.len() < 4 {
            return Err(ProtocolError::Truncated {
                what: "NAMES reply",
                needed: 4,
                got: buf.len(),
            });
        }
        let epmd_port = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let text = std::str::from_utf8(&buf[4..]).map_err(|_| ProtocolError::Malformed {
            what: "NAMES reply",
            reason: "text is not valid UTF-8".into(),
        })?;
        let malformed = |line: &str| ProtocolError::Malformed {
            what: "NAMES reply",
            reason: format!("line {line:?} is not `name NAME at port PORT`"),
        };
        let mut nodes = Vec::new();
        let mut lines = text.split('\n');
        let last = lines.next_back();
        if last != Some("") {
            return Err(ProtocolError::Malformed {
                what: "NAMES reply",
                reason: "text does not end with a newline".into(),
            });
        }
        for line in lines {
            let rest = line.strip_prefix("name ").ok_or_else(|| malformed(line))?;
            let (name, port) = rest
                .rsplit_once(" at port ")
                .ok_or_else(|| malformed(line))?;
            let port: u16 = port.parse().map_err(|_| malformed(line))?;
            nodes.push((name.to_string(), port));
        }
        Ok(Self { epmd_port, nodes })
    }
}

/// Appends one line of a `DUMP_REQ` reply for a registered node, NUL byte included
/// (the real epmd sends each line's terminating NUL).
pub fn encode_dump_active(name: &str, port: u16, fd: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(
        format!("active name     <{name}> at port {port}, fd = {fd}\n\0").as_bytes(),
    );
}

/// Appends one line of a `DUMP_REQ` reply for a name that was registered before.
pub fn encode_dump_old(name: &str, port: u16, fd: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(
        format!("old/unused name <{name}>, port = {port}, fd = {fd} \n\0").as_bytes(),
    );
}

// ---------------------------------------------------------------------------
// joerl requests and replies
// ---------------------------------------------------------------------------

/// A registration token: only its holder may renew or remove the registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RegistrationToken(pub [u8; 16]);

impl RegistrationToken {
    /// A fresh random token.
    pub fn random() -> Self {
        Self(rand::random())
    }
}

impl std::fmt::Display for RegistrationToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Only a prefix: enough to correlate logs, not enough to steal the registration.
        for byte in &self.0[..4] {
            write!(f, "{byte:02x}")?;
        }
        f.write_str("…")
    }
}

/// Payload of [`JOERL_REGISTER_REQ`] (version 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterRequest {
    /// Node name (same rules as Erlang names).
    pub name: String,
    /// Host where the node listens; empty means "the daemon's host".
    pub host: String,
    /// Port where the node listens.
    pub port: u16,
    /// Free-form metadata returned by lookups.
    pub metadata: BTreeMap<String, String>,
    /// `None`: the registration lives as long as this connection.
    /// `Some(0)`: a lease of the daemon's default length.
    /// `Some(ms)`: a lease of `ms` milliseconds (clamped to the daemon's bounds).
    pub lease_ms: Option<u64>,
    /// What `PORT_PLEASE2_REQ` returns for this node.
    pub dist: DistInfo,
}

/// Payload of [`JOERL_KEEPALIVE_REQ`] (version 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeepAliveRequest {
    /// Token returned by the registration.
    pub token: RegistrationToken,
}

/// Payload of [`JOERL_UNREGISTER_REQ`] (version 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnregisterRequest {
    /// Token returned by the registration.
    pub token: RegistrationToken,
}

/// Payload of [`JOERL_LOOKUP_REQ`] (version 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LookupRequest {
    /// Name to look up.
    pub name: String,
}

/// Payload of [`JOERL_LIST_REQ`] (version 1; no fields yet).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ListRequest {}

/// Payload of [`JOERL_PING_REQ`] (version 1; no fields yet).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PingRequest {}

/// One of joerl's own requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoerlRequest {
    /// Register a node.
    Register(RegisterRequest),
    /// Renew a lease.
    KeepAlive(KeepAliveRequest),
    /// Remove a registration.
    Unregister(UnregisterRequest),
    /// Look up one node.
    Lookup(LookupRequest),
    /// List all nodes.
    List(ListRequest),
    /// Ping the daemon.
    Ping(PingRequest),
}

/// Most bytes a request payload may make the decoder claim: no request frame is larger.
const REQUEST_DECODE_LIMIT: usize = MAX_FRAME_BODY;
/// Most bytes a reply payload may make the decoder claim (the client also bounds the
/// reply frame itself, see `ClientConfig::max_reply_bytes`).
pub const MAX_REPLY_BYTES: usize = 16 * 1024 * 1024;

fn encode_payload<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, ProtocolError> {
    bincode::serde::encode_to_vec(value, bincode::config::standard()).map_err(|err| {
        ProtocolError::Encode {
            what,
            reason: err.to_string(),
        }
    })
}

/// Decodes a bincode payload that must fill `bytes` exactly.
///
/// bincode allocates a string or vector of the length its prefix claims before
/// reading it, so the decoder always runs with a byte limit: a forged length
/// fails with "limit exceeded" instead of allocating.
fn decode_payload<T: serde::de::DeserializeOwned>(
    what: &'static str,
    bytes: &[u8],
    limit: usize,
) -> Result<T, ProtocolError> {
    let decoded: Result<(T, usize), bincode::error::DecodeError> = if limit <= REQUEST_DECODE_LIMIT
    {
        bincode::serde::decode_from_slice(
            bytes,
            bincode::config::standard().with_limit::<REQUEST_DECODE_LIMIT>(),
        )
    } else {
        bincode::serde::decode_from_slice(
            bytes,
            bincode::config::standard().with_limit::<MAX_REPLY_BYTES>(),
        )
    };
    let (value, used) = decoded.map_err(|err| ProtocolError::Payload {
        what,
        reason: err.to_string(),
    })?;
    if used != bytes.len() {
        return Err(ProtocolError::Payload {
            what,
            reason: format!("{} unexpected bytes after the payload", bytes.len() - used),
        });
    }
    Ok(value)
}

impl JoerlRequest {
    /// The request's tag byte.
    pub fn tag(&self) -> u8 {
        match self {
            JoerlRequest::Register(_) => JOERL_REGISTER_REQ,
            JoerlRequest::KeepAlive(_) => JOERL_KEEPALIVE_REQ,
            JoerlRequest::Unregister(_) => JOERL_UNREGISTER_REQ,
            JoerlRequest::Lookup(_) => JOERL_LOOKUP_REQ,
            JoerlRequest::List(_) => JOERL_LIST_REQ,
            JoerlRequest::Ping(_) => JOERL_PING_REQ,
        }
    }

    /// Encodes the request body: tag, [`JOERL_PROTOCOL_VERSION`], bincode payload.
    pub fn encode_body(&self) -> Result<Vec<u8>, ProtocolError> {
        let payload = match self {
            JoerlRequest::Register(p) => encode_payload("register", p)?,
            JoerlRequest::KeepAlive(p) => encode_payload("keep-alive", p)?,
            JoerlRequest::Unregister(p) => encode_payload("unregister", p)?,
            JoerlRequest::Lookup(p) => encode_payload("lookup", p)?,
            JoerlRequest::List(p) => encode_payload("list", p)?,
            JoerlRequest::Ping(p) => encode_payload("ping", p)?,
        };
        let mut body = Vec::with_capacity(2 + payload.len());
        body.push(self.tag());
        body.push(JOERL_PROTOCOL_VERSION);
        body.extend_from_slice(&payload);
        Ok(body)
    }

    /// Decodes a request body starting with a joerl tag.
    pub fn decode_body(body: &[u8]) -> Result<Self, ProtocolError> {
        if body.len() < 2 {
            return Err(ProtocolError::Truncated {
                what: "joerl request",
                needed: 2,
                got: body.len(),
            });
        }
        if body[1] != JOERL_PROTOCOL_VERSION {
            return Err(ProtocolError::UnsupportedVersion {
                got: body[1],
                supported: JOERL_PROTOCOL_VERSION,
            });
        }
        let payload = &body[2..];
        Ok(match body[0] {
            JOERL_REGISTER_REQ => {
                JoerlRequest::Register(decode_payload("register", payload, REQUEST_DECODE_LIMIT)?)
            }
            JOERL_KEEPALIVE_REQ => JoerlRequest::KeepAlive(decode_payload(
                "keep-alive",
                payload,
                REQUEST_DECODE_LIMIT,
            )?),
            JOERL_UNREGISTER_REQ => JoerlRequest::Unregister(decode_payload(
                "unregister",
                payload,
                REQUEST_DECODE_LIMIT,
            )?),
            JOERL_LOOKUP_REQ => {
                JoerlRequest::Lookup(decode_payload("lookup", payload, REQUEST_DECODE_LIMIT)?)
            }
            JOERL_LIST_REQ => {
                JoerlRequest::List(decode_payload("list", payload, REQUEST_DECODE_LIMIT)?)
            }
            JOERL_PING_REQ => {
                JoerlRequest::Ping(decode_payload("ping", payload, REQUEST_DECODE_LIMIT)?)
            }
            other => return Err(ProtocolError::UnknownTag(other)),
        })
    }
}

/// How a node got into the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeKind {
    /// Registered with Erlang's `ALIVE2_REQ`; lives as long as its connection.
    Erlang,
    /// Registered with joerl's register request.
    Joerl,
}

/// Everything the daemon knows about one registered node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Node name (the part before `@`).
    pub name: String,
    /// Host where the node listens. For Erlang nodes (and joerl nodes that gave
    /// no host) the daemon fills in its own address as the asking client reached it.
    pub host: String,
    /// Distribution port.
    pub port: u16,
    /// Free-form metadata (empty for Erlang nodes).
    pub metadata: BTreeMap<String, String>,
    /// Creation the daemon assigned at registration.
    pub creation: u32,
    /// How the node registered.
    pub kind: NodeKind,
    /// Lease length in milliseconds, `None` if the registration lives with its connection.
    pub lease_ms: Option<u64>,
    /// Type, protocol, versions and extra bytes (what `PORT2_RESP` returns).
    pub dist: DistInfo,
}

/// Answer to a successful register request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisteredReply {
    /// Secret token: keep it to renew or remove the registration.
    pub token: RegistrationToken,
    /// Creation the daemon assigned.
    pub creation: u32,
    /// Lease granted in milliseconds (`None`: lives with the connection).
    pub lease_ms: Option<u64>,
    /// How often the daemon asks holders to renew, in milliseconds.
    pub keepalive_ms: u64,
}

/// Answer to a ping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PongReply {
    /// Name and version of the daemon software.
    pub daemon: String,
    /// Highest joerl payload version the daemon speaks.
    pub protocol_version: u8,
    /// Number of registered nodes.
    pub nodes: u64,
    /// Seconds since the daemon started.
    pub uptime_secs: u64,
}

/// Payload of a [`JOERL_REPLY`] frame (version 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JoerlReply {
    /// The node is registered.
    Registered(RegisteredReply),
    /// The lease was renewed; carries the lease length in milliseconds (`None` for connection-held).
    KeptAlive {
        /// Lease length now in force.
        lease_ms: Option<u64>,
    },
    /// The registration was removed.
    Unregistered,
    /// Result of a lookup.
    Lookup(Option<NodeInfo>),
    /// Result of a list request.
    List(Vec<NodeInfo>),
    /// Result of a ping.
    Pong(PongReply),
    /// The request was refused.
    Refused(RegistryError),
}

impl JoerlReply {
    /// Encodes the reply as a complete frame: 4-byte length, [`JOERL_REPLY`], version, payload.
    pub fn encode(&self) -> Result<Vec<u8>, ProtocolError> {
        let payload = encode_payload("reply", self)?;
        let len = u32::try_from(payload.len() + 2).map_err(|_| ProtocolError::Encode {
            what: "reply",
            reason: "reply larger than 4 GiB".into(),
        })?;
        let mut out = Vec::with_capacity(6 + payload.len());
        out.extend_from_slice(&len.to_be_bytes());
        out.push(JOERL_REPLY);
        out.push(JOERL_PROTOCOL_VERSION);
        out.extend_from_slice(&payload);
        Ok(out)
    }

    /// Decodes a reply body (the bytes after the 4-byte length).
    pub fn decode_body(body: &[u8]) -> Result<Self, ProtocolError> {
        match body {
            [JOERL_REPLY, version, payload @ ..] => {
                if *version != JOERL_PROTOCOL_VERSION {
                    return Err(ProtocolError::UnsupportedVersion {
                        got: *version,
                        supported: JOERL_PROTOCOL_VERSION,
                    });
                }
                decode_payload("reply", payload, MAX_REPLY_BYTES)
            }
            [JOERL_VERSION_REPLY, low, high, ..] => Err(ProtocolError::Malformed {
                what: "joerl reply",
                reason: format!(
                    "the daemon speaks joerl payload versions {low}..={high}, this client speaks {JOERL_PROTOCOL_VERSION}"
                ),
            }),
            [tag, ..] => Err(ProtocolError::UnexpectedReplyTag {
                expected: JOERL_REPLY,
                got: *tag,
            }),
            [] => Err(ProtocolError::Truncated {
                what: "joerl reply",
                needed: 2,
                got: 0,
            }),
        }
    }
}

/// The reply to a joerl request with an unsupported version: 4-byte length,
/// [`JOERL_VERSION_REPLY`], lowest and highest supported version.
pub fn encode_version_reply() -> Vec<u8> {
    let mut out = 3u32.to_be_bytes().to_vec();
    out.extend_from_slice(&[
        JOERL_VERSION_REPLY,
        JOERL_PROTOCOL_VERSION,
        JOERL_PROTOCOL_VERSION,
    ]);
    out
}

/// Reads the 4-byte length of a joerl reply at the start of `buf`, if present.
pub fn joerl_reply_len(buf: &[u8]) -> Option<usize> {
    let header: [u8; 4] = buf.get(..4)?.try_into().ok()?;
    Some(u32::from_be_bytes(header) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alive2_body(name: &[u8], high: u16, extra: &[u8]) -> Vec<u8> {
        let mut b = vec![ALIVE2_REQ, 0x15, 0xb3, 77, 0];
        b.extend_from_slice(&high.to_be_bytes());
        b.extend_from_slice(&5u16.to_be_bytes());
        b.extend_from_slice(&(name.len() as u16).to_be_bytes());
        b.extend_from_slice(name);
        b.extend_from_slice(&(extra.len() as u16).to_be_bytes());
        b.extend_from_slice(extra);
        b
    }

    #[test]
    fn tags_match_the_erlang_documentation() {
        assert_eq!(
            (
                ALIVE2_REQ,
                ALIVE2_RESP,
                ALIVE2_X_RESP,
                PORT_PLEASE2_REQ,
                PORT2_RESP
            ),
            (b'x', b'y', b'v', b'z', b'w')
        );
        assert_eq!(
            (NAMES_REQ, DUMP_REQ, KILL_REQ, STOP_REQ),
            (b'n', b'd', b'k', b's')
        );
    }

    #[test]
    fn check_frame_waits_for_complete_frames_and_enforces_limits() {
        assert_eq!(check_frame(&[], 100), Ok(None));
        assert_eq!(check_frame(&[0], 100), Ok(None));
        assert_eq!(check_frame(&[0, 3, b'n'], 100), Ok(None));
        assert_eq!(check_frame(&[0, 1, b'n'], 100), Ok(Some(1)));
        assert_eq!(check_frame(&[0, 1, b'n', 9, 9], 100), Ok(Some(1)));
        assert_eq!(check_frame(&[0, 0], 100), Err(ProtocolError::EmptyRequest));
        assert_eq!(
            check_frame(&[0x10, 0], 100),
            Err(ProtocolError::RequestTooLarge {
                len: 4096,
                max: 100
            })
        );
    }

    #[test]
    fn alive2_request_decodes_the_bytes_a_real_node_sends() {
        // Bytes of an OTP 25 node `foo` on port 5555: x, port, 'M', tcp, 6, 5, "foo", no extra.
        let body = [
            0x78, 0x15, 0xb3, 0x4d, 0x00, 0x00, 0x06, 0x00, 0x05, 0x00, 0x03, b'f', b'o', b'o',
            0x00, 0x00,
        ];
        let req = decode_request(&body).unwrap();
        let expected = Alive2Request {
            port: 5555,
            name: "foo".into(),
            dist: DistInfo::default(),
        };
        assert_eq!(req, Request::Alive2(expected.clone()));
        assert_eq!(expected.encode_body().unwrap(), body);
        assert_eq!(
            Request::Alive2(expected).encode().unwrap()[..2],
            [0, body.len() as u8]
        );
    }

    #[test]
    fn alive2_truncations_close_and_bad_names_are_refused_with_a_reply() {
        assert!(matches!(
            decode_request(&alive2_body(b"a", 6, b"")[..13]),
            Err(ProtocolError::Truncated { .. })
        ));
        let mut lying = alive2_body(b"abc", 6, b"");
        lying[10] = 200; // name length beyond the frame
        assert!(matches!(
            decode_request(&lying),
            Err(ProtocolError::Truncated { .. })
        ));
        let mut lying_extra = alive2_body(b"abc", 6, b"xy");
        lying_extra[15] = 9;
        assert!(matches!(
            decode_request(&lying_extra),
            Err(ProtocolError::Truncated { .. })
        ));
        assert!(matches!(
            decode_request(&alive2_body(b"a\0b", 6, b"")),
            Err(ProtocolError::Malformed { .. })
        ));
        assert!(matches!(
            decode_request(&alive2_body(&[0xff, 0xfe], 5, b"")),
            Ok(Request::Alive2Rejected {
                highest_version: 5,
                ..
            })
        ));
        let long = vec![b'a'; 256];
        assert!(matches!(
            decode_request(&alive2_body(&long, 6, b"")),
            Ok(Request::Alive2Rejected { .. })
        ));
        // 255 characters of 4 bytes each is the longest name epmd accepts.
        let widest = "𝄞".repeat(255);
        assert!(matches!(
            decode_request(&alive2_body(widest.as_bytes(), 6, b"")),
            Ok(Request::Alive2(_))
        ));
        // Bytes after the declared extra are ignored, as epmd does.
        let mut trailing = alive2_body(b"abc", 6, b"");
        trailing.push(7);
        assert!(matches!(decode_request(&trailing), Ok(Request::Alive2(_))));
    }

    #[test]
    fn alive2_replies_match_the_real_epmd() {
        // Bytes observed from Debian's epmd (OTP 25) for highest version 6 and 5.
        assert_eq!(
            Alive2Reply::for_version(6, 0, 0x6b02_4e01).encode(),
            [0x76, 0x00, 0x6b, 0x02, 0x4e, 0x01]
        );
        assert_eq!(
            Alive2Reply::for_version(6, 1, CREATION_ON_REFUSAL).encode(),
            [0x76, 0x01, 0x00, 0x00, 0x00, 0x63]
        );
        assert_eq!(
            Alive2Reply::for_version(5, 0, 1).encode(),
            [0x79, 0x00, 0x00, 0x01]
        );
        for reply in [
            Alive2Reply::for_version(6, 0, 0xdead_beef),
            Alive2Reply::for_version(5, 1, 3),
        ] {
            let bytes = reply.encode();
            assert_eq!(Alive2Reply::decode(&bytes), Ok(Some((reply, bytes.len()))));
            assert_eq!(Alive2Reply::decode(&bytes[..bytes.len() - 1]), Ok(None));
        }
    }

    #[test]
    fn port_please2_request_and_replies() {
        assert_eq!(
            decode_request(b"zbar"),
            Ok(Request::PortPlease2 { name: "bar".into() })
        );
        assert_eq!(
            decode_request(b"zbar\0"),
            Ok(Request::PortPlease2 { name: "bar".into() })
        );
        assert!(decode_request(b"z").is_err());
        assert!(decode_request(b"z\0").is_err());
        assert!(decode_request(b"zb\0r").is_err());
        assert_eq!(
            Request::PortPlease2 { name: "bar".into() }
                .encode()
                .unwrap(),
            b"\x00\x04zbar"
        );
        // Observed from the real epmd for `bar`, port 5555, versions 5/5, extra "xy".
        let real = [
            0x77, 0x00, 0x15, 0xb3, 0x4d, 0x00, 0x00, 0x05, 0x00, 0x05, 0x00, 0x03, 0x62, 0x61,
            0x72, 0x00, 0x02, 0x78, 0x79,
        ];
        let reply = PortPleaseReply {
            port: 5555,
            name: "bar".into(),
            dist: DistInfo {
                node_type: 77,
                protocol: 0,
                highest_version: 5,
                lowest_version: 5,
                extra: b"xy".to_vec(),
            },
        };
        assert_eq!(reply.encode(), real);
        assert_eq!(PortPleaseReply::decode(&real), Ok(Some(reply)));
        assert_eq!(PortPleaseReply::decode(&PORT2_MISS), Ok(None));
        assert!(PortPleaseReply::decode(&real[..real.len() - 1]).is_err());
        assert!(PortPleaseReply::decode(&[PORT2_RESP]).is_err());
    }

    #[test]
    fn names_reply_round_trips_and_matches_the_real_epmd() {
        let real = b"\x00\x00\xa8gname bar at port 5555\nname foo at port 5555\n";
        let reply = NamesReply {
            epmd_port: 43111,
            nodes: vec![("bar".into(), 5555), ("foo".into(), 5555)],
        };
        assert_eq!(reply.encode(), real);
        assert_eq!(NamesReply::decode(real), Ok(reply));
        assert_eq!(
            NamesReply::decode(b"\x00\x00\x11\x11").unwrap().nodes,
            vec![]
        );
        assert!(NamesReply::decode(b"\x00\x00\x11\x11name x at port 1").is_err());
        assert!(NamesReply::decode(b"\x00\x00\x11\x11garbage\n").is_err());
        assert!(NamesReply::decode(b"\x00\x00").is_err());
    }

    #[test]
    fn dump_lines_match_the_real_epmd() {
        let mut out = Vec::new();
        encode_dump_active("bar", 5555, 7, &mut out);
        assert_eq!(out, b"active name     <bar> at port 5555, fd = 7\n\0");
        out.clear();
        encode_dump_old("foo", 5555, 5, &mut out);
        assert_eq!(out, b"old/unused name <foo>, port = 5555, fd = 5 \n\0");
    }

    #[test]
    fn simple_requests_decode_like_epmd() {
        assert_eq!(decode_request(b"n"), Ok(Request::Names));
        assert_eq!(decode_request(b"nxyz"), Ok(Request::Names));
        assert_eq!(decode_request(b"d"), Ok(Request::Dump));
        assert_eq!(decode_request(b"k"), Ok(Request::Kill));
        assert_eq!(
            decode_request(b"sfoo"),
            Ok(Request::Stop {
                name: b"foo".to_vec()
            })
        );
        assert_eq!(
            decode_request(b"sfoo\0bar"),
            Ok(Request::Stop {
                name: b"foo".to_vec()
            })
        );
        assert!(decode_request(b"s").is_err());
        assert_eq!(decode_request(b"Q"), Err(ProtocolError::UnknownTag(b'Q')));
        assert_eq!(decode_request(b""), Err(ProtocolError::EmptyRequest));
        for req in [Request::Names, Request::Dump, Request::Kill] {
            assert_eq!(decode_request(&req.encode().unwrap()[2..]), Ok(req));
        }
    }

    fn sample_requests() -> Vec<JoerlRequest> {
        let mut metadata = BTreeMap::new();
        metadata.insert("role".to_string(), "worker".to_string());
        metadata.insert("zone".to_string(), "α".to_string());
        vec![
            JoerlRequest::Register(RegisterRequest {
                name: "alpha".into(),
                host: "127.0.0.1".into(),
                port: 9000,
                metadata,
                lease_ms: Some(60_000),
                dist: DistInfo::default(),
            }),
            JoerlRequest::Register(RegisterRequest {
                name: "beta".into(),
                host: String::new(),
                port: 1,
                metadata: BTreeMap::new(),
                lease_ms: None,
                dist: DistInfo {
                    node_type: NODE_TYPE_HIDDEN,
                    extra: vec![1, 2, 3],
                    ..DistInfo::default()
                },
            }),
            JoerlRequest::KeepAlive(KeepAliveRequest {
                token: RegistrationToken([7; 16]),
            }),
            JoerlRequest::Unregister(UnregisterRequest {
                token: RegistrationToken::random(),
            }),
            JoerlRequest::Lookup(LookupRequest {
                name: "alpha".into(),
            }),
            JoerlRequest::List(ListRequest {}),
            JoerlRequest::Ping(PingRequest {}),
        ]
    }

    #[test]
    fn joerl_requests_round_trip() {
        for req in sample_requests() {
            let frame = Request::Joerl(req.clone()).encode().unwrap();
            let len = check_frame(&frame, MAX_FRAME_BODY).unwrap().unwrap();
            assert_eq!(len, frame.len() - 2);
            assert_eq!(frame[2], req.tag());
            assert_eq!(frame[3], JOERL_PROTOCOL_VERSION);
            assert_eq!(decode_request(&frame[2..]), Ok(Request::Joerl(req)));
        }
    }

    #[test]
    fn joerl_requests_reject_other_versions_and_trailing_bytes() {
        let mut body = JoerlRequest::Ping(PingRequest {}).encode_body().unwrap();
        body[1] = 2;
        assert_eq!(
            decode_request(&body),
            Err(ProtocolError::UnsupportedVersion {
                got: 2,
                supported: 1
            })
        );
        let mut body = JoerlRequest::Lookup(LookupRequest { name: "x".into() })
            .encode_body()
            .unwrap();
        body.push(0);
        assert!(matches!(
            decode_request(&body),
            Err(ProtocolError::Payload { .. })
        ));
        assert!(matches!(
            decode_request(&[JOERL_LOOKUP_REQ]),
            Err(ProtocolError::Truncated { .. })
        ));
    }

    #[test]
    fn joerl_replies_round_trip() {
        let node = NodeInfo {
            name: "alpha".into(),
            host: "127.0.0.1".into(),
            port: 9000,
            metadata: BTreeMap::from([("k".to_string(), "v".to_string())]),
            creation: 0x6b02_4e01,
            kind: NodeKind::Joerl,
            lease_ms: Some(60_000),
            dist: DistInfo::default(),
        };
        let replies = vec![
            JoerlReply::Registered(RegisteredReply {
                token: RegistrationToken([1; 16]),
                creation: 5,
                lease_ms: None,
                keepalive_ms: 20_000,
            }),
            JoerlReply::KeptAlive {
                lease_ms: Some(60_000),
            },
            JoerlReply::Unregistered,
            JoerlReply::Lookup(Some(node.clone())),
            JoerlReply::Lookup(None),
            JoerlReply::List(vec![node.clone(), node]),
            JoerlReply::Pong(PongReply {
                daemon: "joerl-epmd 0.1.0".into(),
                protocol_version: 1,
                nodes: 2,
                uptime_secs: 3,
            }),
            JoerlReply::Refused(RegistryError::NameTaken("alpha".into())),
            JoerlReply::Refused(RegistryError::UnknownToken),
        ];
        for reply in replies {
            let bytes = reply.encode().unwrap();
            let len = joerl_reply_len(&bytes).unwrap();
            assert_eq!(len, bytes.len() - 4);
            assert_eq!(JoerlReply::decode_body(&bytes[4..]), Ok(reply));
        }
        let version = encode_version_reply();
        assert_eq!(joerl_reply_len(&version), Some(3));
        assert!(JoerlReply::decode_body(&version[4..]).is_err());
    }

    #[test]
    fn forged_payload_lengths_fail_without_allocating() {
        // A lookup whose name claims 2^40 bytes (bincode varint 0xFD + u64 LE).
        let mut body = vec![JOERL_LOOKUP_REQ, JOERL_PROTOCOL_VERSION, 0xFD];
        body.extend_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(matches!(
            decode_request(&body),
            Err(ProtocolError::Payload { .. })
        ));
        // Same for a reply listing 2^40 nodes.
        let mut reply = vec![JOERL_REPLY, JOERL_PROTOCOL_VERSION, 4, 0xFD];
        reply.extend_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(JoerlReply::decode_body(&reply).is_err());
    }

    /// A small deterministic generator (xorshift64*), so the fuzz loop needs no extra crate
    /// and any failure reproduces.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    fn exercise_all_decoders(bytes: &[u8]) {
        let _ = check_frame(bytes, MAX_FRAME_BODY);
        let _ = decode_request(bytes);
        let _ = JoerlRequest::decode_body(bytes);
        let _ = JoerlReply::decode_body(bytes);
        let _ = Alive2Reply::decode(bytes);
        let _ = PortPleaseReply::decode(bytes);
        let _ = NamesReply::decode(bytes);
        let _ = joerl_reply_len(bytes);
    }

    #[test]
    fn arbitrary_bytes_never_panic_any_decoder() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let interesting_first = [
            ALIVE2_REQ,
            PORT_PLEASE2_REQ,
            NAMES_REQ,
            STOP_REQ,
            JOERL_REGISTER_REQ,
            JOERL_KEEPALIVE_REQ,
            JOERL_UNREGISTER_REQ,
            JOERL_LOOKUP_REQ,
            JOERL_LIST_REQ,
            JOERL_PING_REQ,
            JOERL_REPLY,
            JOERL_VERSION_REPLY,
            PORT2_RESP,
            ALIVE2_X_RESP,
        ];
        for round in 0..200_000 {
            let len = rng.below(64);
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            if !bytes.is_empty() && round % 2 == 0 {
                bytes[0] = interesting_first[rng.below(interesting_first.len())];
                if bytes.len() > 1 && round % 4 == 0 {
                    bytes[1] = JOERL_PROTOCOL_VERSION;
                }
            }
            exercise_all_decoders(&bytes);
        }
    }

    #[test]
    fn mutated_valid_messages_never_panic_any_decoder() {
        let mut rng = XorShift(42);
        let mut seeds: Vec<Vec<u8>> = sample_requests()
            .into_iter()
            .map(|r| r.encode_body().unwrap())
            .collect();
        seeds.push(alive2_body(b"node", 6, b"extra"));
        seeds.push(b"zsomename".to_vec());
        seeds.push(
            NamesReply {
                epmd_port: 4369,
                nodes: vec![("a".into(), 1)],
            }
            .encode(),
        );
        seeds.push(JoerlReply::List(vec![]).encode().unwrap().split_off(4));
        for _ in 0..100_000 {
            let mut bytes = seeds[rng.below(seeds.len())].clone();
            for _ in 0..=rng.below(4) {
                match rng.below(3) {
                    0 if !bytes.is_empty() => {
                        let at = rng.below(bytes.len());
                        bytes[at] = rng.next() as u8;
                    }
                    1 if !bytes.is_empty() => {
                        let at = rng.below(bytes.len());
                        bytes.truncate(at);
                    }
                    _ => bytes.push(rng.next() as u8),
                }
            }
            exercise_all_decoders(&bytes);
        }
    }
}
