//! Erlang's connection handshake (distribution protocol version 6, OTP 23 and
//! later), as a state machine with no I/O.
//!
//! Every handshake message travels in a packet with a 2-byte big-endian
//! length; the machine takes and returns packet bodies, the connection code
//! adds and strips the lengths. The dialer (`A`) and the acceptor (`B`):
//!
//! ```text
//! A -> B  'N' flags:u64 creation:u32 nlen:u16 name      send_name
//! B -> A  's' status                                    ok | ok_simultaneous | nok | not_allowed | alive
//! A -> B  's' true|false                                only after alive
//! B -> A  'N' flags:u64 challenge:u32 creation:u32 nlen:u16 name
//! A -> B  'r' challenge:u32 digest:16                   digest = MD5(cookie ++ decimal(B's challenge))
//! B -> A  'a' digest:16                                 MD5(cookie ++ decimal(A's challenge))
//! ```
//!
//! The dialer proves that it knows the cookie first; the acceptor answers only
//! a valid proof, so a node without the cookie learns nothing but a closed
//! connection. Both sides refuse a peer that lacks a capability this node
//! needs ([`REQUIRED_FLAGS`]). The old `'n'` name message of OTP 23/24 nodes
//! that did not ask EPMD is refused: this dialect speaks version 6 only.

use md5::{Digest as _, Md5};

use super::flags;

/// Largest handshake packet accepted, in bytes (names are at most 1,024 bytes).
pub const MAX_HANDSHAKE_PACKET: usize = 1_100;

/// Flags a peer must offer: what OTP 26 makes mandatory (OTP 24 and 25 offer
/// them all). A peer without them is refused during the handshake.
pub const REQUIRED_FLAGS: u64 = flags::EXTENDED_REFERENCES
    | flags::FUN_TAGS
    | flags::NEW_FUN_TAGS
    | flags::EXTENDED_PIDS_PORTS
    | flags::EXPORT_PTR_TAG
    | flags::BIT_BINARIES
    | flags::NEW_FLOATS
    | flags::UTF8_ATOMS
    | flags::MAP_TAG
    | flags::BIG_CREATION
    | flags::HANDSHAKE_23
    | flags::UNLINK_ID
    | flags::V4_NC;

/// The flags this node offers: the required ones, monitors by pid and name,
/// `SEND_SENDER`, exit payloads, fragments (read, never written), aliases,
/// the OTP 25 digest, and
/// [`flags::PUBLISHED`] unless it connects as a hidden node.
pub fn offered_flags(hidden: bool) -> u64 {
    let mut f = REQUIRED_FLAGS
        | flags::DIST_MONITOR
        | flags::DIST_MONITOR_NAME
        | flags::UNICODE_IO
        | flags::SMALL_ATOM_TAGS
        | flags::SEND_SENDER
        | flags::BIG_SEQTRACE_LABELS
        | flags::EXIT_PAYLOAD
        | flags::FRAGMENTS
        | flags::ALIAS
        | flags::MANDATORY_25_DIGEST;
    if !hidden {
        f |= flags::PUBLISHED;
    }
    f
}

/// Why an Erlang handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ErlHandshakeError {
    /// The peer sent a packet this step does not expect, or a malformed one.
    #[error("malformed Erlang handshake: {0}")]
    Malformed(String),
    /// The digest did not match: the nodes do not share a cookie.
    #[error(
        "authentication failed: the Erlang peer's cookie does not match this node's (start both with the same -setcookie / cookie)"
    )]
    AuthenticationFailed,
    /// The peer lacks capabilities this node needs.
    #[error(
        "the peer lacks required distribution capabilities (flags {missing:#x} missing): it must be Erlang/OTP 24 or later"
    )]
    MissingFlags {
        /// The required flags the peer did not offer.
        missing: u64,
    },
    /// The peer answered a status that ends the handshake.
    #[error("the Erlang peer refused the connection with status {0:?}")]
    Refused(String),
    /// Simultaneous connect: the other connection is used (not a failure).
    #[error("simultaneous connect: the peer's own connection is used")]
    Simultaneous,
    /// The peer is not the node dialed.
    #[error("dialed {expected} but the peer says it is {actual}")]
    WrongPeer {
        /// The node dialed.
        expected: String,
        /// The name the peer gave.
        actual: String,
    },
    /// The connection is already up here and the dialer said not to replace it.
    #[error("already connected: the dialer kept its existing connection")]
    AlreadyConnected,
}

/// What the handshake learned of the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErlPeerInfo {
    /// Full node name (`name@host`).
    pub name: String,
    /// Flags the peer offered.
    pub flags: u64,
    /// The peer's creation (incarnation).
    pub creation: u32,
}

/// The acceptor's answer to a dialer's name (Erlang's status codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Go on.
    Ok,
    /// Go on; this node was dialing the peer too and gives its own dial up
    /// (the dialer's name is greater).
    OkSimultaneous,
    /// Stop: this node is dialing the peer too and its dial wins.
    Nok,
    /// Stop: not allowed.
    NotAllowed,
    /// A connection to this peer is up here; the dialer says whether to
    /// replace it.
    Alive,
}

impl Status {
    fn text(self) -> &'static [u8] {
        match self {
            Status::Ok => b"ok",
            Status::OkSimultaneous => b"ok_simultaneous",
            Status::Nok => b"nok",
            Status::NotAllowed => b"not_allowed",
            Status::Alive => b"alive",
        }
    }
}

/// What the connection code does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write this packet body (the caller adds the 2-byte length).
    Send(Vec<u8>),
    /// Acceptor only: decide whether to accept the named peer and answer
    /// with [`Handshake::decide`].
    Decide(ErlPeerInfo),
    /// Dialer only: the acceptor says a connection to this node is up there
    /// (`alive`); answer with [`Handshake::answer_alive`]: `true` if this
    /// node has no connection to it (the acceptor's is dead and is
    /// replaced), `false` if it has one (this dial ends).
    AskAlive,
    /// The handshake is complete: the connection is up with this peer.
    Done(ErlPeerInfo),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Dialer: sent the name, waiting for the status.
    AwaitStatus,
    /// Dialer: told `alive`, waiting for [`Handshake::answer_alive`].
    AliveAsked,
    /// Dialer: waiting for the acceptor's challenge.
    AwaitChallenge,
    /// Dialer: waiting for the acceptor's digest.
    AwaitAck,
    /// Acceptor: waiting for the dialer's name.
    AwaitName,
    /// Acceptor: waiting for [`Handshake::decide`].
    Deciding,
    /// Acceptor: answered `alive`, waiting for true/false.
    AwaitAliveAnswer,
    /// Acceptor: waiting for the dialer's challenge reply.
    AwaitReply,
    /// Finished (successfully or not).
    Over,
}

/// One side of one handshake.
pub struct Handshake {
    state: State,
    my_name: String,
    my_flags: u64,
    my_creation: u32,
    cookie: Vec<u8>,
    /// The challenge this side sent (its peer's digest must match it).
    my_challenge: u32,
    /// Dialer: the node it dialed.
    expected: Option<String>,
    peer: Option<ErlPeerInfo>,
}

impl std::fmt::Debug for Handshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handshake")
            .field("state", &self.state)
            .field("my_name", &self.my_name)
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

/// `MD5(cookie ++ decimal(challenge))`, Erlang's `gen_digest`.
pub fn digest(cookie: &[u8], challenge: u32) -> [u8; 16] {
    let mut h = Md5::new();
    h.update(cookie);
    h.update(challenge.to_string().as_bytes());
    h.finalize().into()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn malformed(what: impl Into<String>) -> ErlHandshakeError {
    ErlHandshakeError::Malformed(what.into())
}

fn be_u16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn be_u64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Checks a node name the peer sent: `name@host`, printable ASCII, bounded.
fn check_name(raw: &[u8]) -> Result<String, ErlHandshakeError> {
    if raw.is_empty() || raw.len() > 1024 {
        return Err(malformed(format!("node name of {} bytes", raw.len())));
    }
    let name = std::str::from_utf8(raw).map_err(|_| malformed("node name is not UTF-8"))?;
    if !name.contains('@') || name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(malformed(format!(
            "{name:?} is not a node name (name@host)"
        )));
    }
    Ok(name.to_string())
}

fn check_flags(flags: u64) -> Result<(), ErlHandshakeError> {
    let missing = REQUIRED_FLAGS & !flags;
    if missing != 0 {
        return Err(ErlHandshakeError::MissingFlags { missing });
    }
    Ok(())
}

/// Parses `'N' flags:u64 [challenge:u32] creation:u32 nlen:u16 name`.
fn parse_n(body: &[u8], with_challenge: bool) -> Result<(ErlPeerInfo, u32), ErlHandshakeError> {
    let fixed = if with_challenge { 19 } else { 15 };
    if body.len() < fixed {
        return Err(malformed(format!(
            "name message of {} bytes, needs at least {fixed}",
            body.len()
        )));
    }
    let flags = be_u64(body, 1);
    let (challenge, at) = if with_challenge {
        (be_u32(body, 9), 13)
    } else {
        (0, 9)
    };
    let creation = be_u32(body, at);
    let nlen = usize::from(be_u16(body, at + 4));
    let name_at = at + 6;
    if body.len() < name_at + nlen {
        return Err(malformed(format!("name length {nlen} exceeds the message")));
    }
    // Erlang: "any extra data after the node Name must be accepted and ignored".
    let name = check_name(&body[name_at..name_at + nlen])?;
    Ok((
        ErlPeerInfo {
            name,
            flags,
            creation,
        },
        challenge,
    ))
}

fn put_n(out: &mut Vec<u8>, flags: u64, challenge: Option<u32>, creation: u32, name: &str) {
    out.push(b'N');
    out.extend_from_slice(&flags.to_be_bytes());
    if let Some(c) = challenge {
        out.extend_from_slice(&c.to_be_bytes());
    }
    out.extend_from_slice(&creation.to_be_bytes());
    out.extend_from_slice(&(name.len() as u16).to_be_bytes());
    out.extend_from_slice(name.as_bytes());
}

impl Handshake {
    /// The dialer's side toward `peer` (`name@host`): returns the machine and
    /// the name packet to send first. `challenge` is this side's random
    /// challenge.
    pub fn dial(
        my_name: &str,
        my_flags: u64,
        my_creation: u32,
        cookie: &[u8],
        peer: &str,
        challenge: u32,
    ) -> (Self, Vec<u8>) {
        let mut first = Vec::with_capacity(15 + my_name.len());
        put_n(&mut first, my_flags, None, my_creation, my_name);
        (
            Handshake {
                state: State::AwaitStatus,
                my_name: my_name.to_string(),
                my_flags,
                my_creation,
                cookie: cookie.to_vec(),
                my_challenge: challenge,
                expected: Some(peer.to_string()),
                peer: None,
            },
            first,
        )
    }

    /// The acceptor's side, waiting for the dialer's name.
    pub fn accept(
        my_name: &str,
        my_flags: u64,
        my_creation: u32,
        cookie: &[u8],
        challenge: u32,
    ) -> Self {
        Handshake {
            state: State::AwaitName,
            my_name: my_name.to_string(),
            my_flags,
            my_creation,
            cookie: cookie.to_vec(),
            my_challenge: challenge,
            expected: None,
            peer: None,
        }
    }

    /// True once the handshake is over (done or failed).
    pub fn is_over(&self) -> bool {
        self.state == State::Over
    }

    /// Feeds one packet body from the peer.
    pub fn handle(&mut self, body: &[u8]) -> Result<Vec<Action>, ErlHandshakeError> {
        let result = self.step(body);
        if result.is_err() {
            self.state = State::Over;
        }
        result
    }

    fn step(&mut self, body: &[u8]) -> Result<Vec<Action>, ErlHandshakeError> {
        if body.len() > MAX_HANDSHAKE_PACKET {
            return Err(malformed(format!(
                "packet of {} bytes exceeds {MAX_HANDSHAKE_PACKET}",
                body.len()
            )));
        }
        let tag = *body.first().ok_or_else(|| malformed("empty packet"))?;
        match (self.state, tag) {
            (State::AwaitStatus, b's') => self.on_status(&body[1..]),
            (State::AwaitChallenge, b'N') => {
                let (peer, challenge) = parse_n(body, true)?;
                check_flags(peer.flags)?;
                let expected = self.expected.as_deref().unwrap_or_default();
                if peer.name != expected {
                    return Err(ErlHandshakeError::WrongPeer {
                        expected: expected.to_string(),
                        actual: peer.name,
                    });
                }
                self.peer = Some(peer);
                let mut reply = Vec::with_capacity(21);
                reply.push(b'r');
                reply.extend_from_slice(&self.my_challenge.to_be_bytes());
                reply.extend_from_slice(&digest(&self.cookie, challenge));
                self.state = State::AwaitAck;
                Ok(vec![Action::Send(reply)])
            }
            (State::AwaitAck, b'a') => {
                if body.len() != 17 {
                    return Err(malformed(format!("challenge ack of {} bytes", body.len())));
                }
                if !constant_time_eq(&body[1..], &digest(&self.cookie, self.my_challenge)) {
                    return Err(ErlHandshakeError::AuthenticationFailed);
                }
                self.state = State::Over;
                Ok(vec![Action::Done(
                    self.peer.clone().expect("set with the challenge"),
                )])
            }
            (State::AwaitName, b'N') => {
                let (peer, _) = parse_n(body, false)?;
                check_flags(peer.flags)?;
                if peer.name == self.my_name {
                    return Err(malformed("the peer claims this node's own name"));
                }
                self.peer = Some(peer.clone());
                self.state = State::Deciding;
                Ok(vec![Action::Decide(peer)])
            }
            (State::AwaitName, b'n') => Err(malformed(
                "old (version 5) name message: this node speaks version 6 only (Erlang/OTP 24 or later asking EPMD)",
            )),
            (State::AwaitAliveAnswer, b's') => match &body[1..] {
                b"true" => Ok(vec![self.challenge()]),
                b"false" => Err(ErlHandshakeError::AlreadyConnected),
                other => Err(malformed(format!(
                    "answer to alive is {:?}, not true or false",
                    String::from_utf8_lossy(other)
                ))),
            },
            (State::AwaitReply, b'r') => {
                if body.len() != 21 {
                    return Err(malformed(format!(
                        "challenge reply of {} bytes",
                        body.len()
                    )));
                }
                if !constant_time_eq(&body[5..], &digest(&self.cookie, self.my_challenge)) {
                    return Err(ErlHandshakeError::AuthenticationFailed);
                }
                let theirs = be_u32(body, 1);
                let mut ack = Vec::with_capacity(17);
                ack.push(b'a');
                ack.extend_from_slice(&digest(&self.cookie, theirs));
                self.state = State::Over;
                Ok(vec![
                    Action::Send(ack),
                    Action::Done(self.peer.clone().expect("set with the name")),
                ])
            }
            (state, tag) => Err(malformed(format!(
                "unexpected packet {:?} while {state:?}",
                char::from(tag)
            ))),
        }
    }

    fn on_status(&mut self, status: &[u8]) -> Result<Vec<Action>, ErlHandshakeError> {
        match status {
            b"ok" | b"ok_simultaneous" => {
                self.state = State::AwaitChallenge;
                Ok(Vec::new())
            }
            b"alive" => {
                self.state = State::AliveAsked;
                Ok(vec![Action::AskAlive])
            }
            b"nok" => Err(ErlHandshakeError::Simultaneous),
            s if s.starts_with(b"named:") => Err(malformed(
                "the peer assigned a dynamic name, which this node did not ask for",
            )),
            other => Err(ErlHandshakeError::Refused(
                String::from_utf8_lossy(other).into_owned(),
            )),
        }
    }

    fn challenge(&mut self) -> Action {
        let mut out = Vec::with_capacity(19 + self.my_name.len());
        put_n(
            &mut out,
            self.my_flags,
            Some(self.my_challenge),
            self.my_creation,
            &self.my_name,
        );
        self.state = State::AwaitReply;
        Action::Send(out)
    }

    /// Dialer: answers the acceptor's `alive` after [`Action::AskAlive`].
    /// With `false` the handshake is over (send the packet, then close).
    pub fn answer_alive(&mut self, go_on: bool) -> Vec<Action> {
        if self.state != State::AliveAsked {
            return Vec::new();
        }
        if go_on {
            self.state = State::AwaitChallenge;
            vec![Action::Send(b"strue".to_vec())]
        } else {
            self.state = State::Over;
            vec![Action::Send(b"sfalse".to_vec())]
        }
    }

    /// Acceptor: answers the dialer after [`Action::Decide`]. `Ok` and
    /// `OkSimultaneous` go on with the challenge; `Alive` waits for the
    /// dialer's answer; `Nok` and `NotAllowed` end the handshake (send the
    /// status, then close).
    pub fn decide(&mut self, status: Status) -> Vec<Action> {
        if self.state != State::Deciding {
            return Vec::new();
        }
        let mut packet = vec![b's'];
        packet.extend_from_slice(status.text());
        let mut out = vec![Action::Send(packet)];
        match status {
            Status::Ok | Status::OkSimultaneous => out.push(self.challenge()),
            Status::Alive => self.state = State::AwaitAliveAnswer,
            Status::Nok | Status::NotAllowed => self.state = State::Over,
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOKIE: &[u8] = b"secret";

    fn sends(actions: &[Action]) -> Vec<Vec<u8>> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send(p) => Some(p.clone()),
                _ => None,
            })
            .collect()
    }

    /// Runs a full handshake between two machines with the given cookies.
    fn run(
        dialer_cookie: &[u8],
        acceptor_cookie: &[u8],
        status: Status,
    ) -> (
        Result<ErlPeerInfo, ErlHandshakeError>,
        Result<ErlPeerInfo, ErlHandshakeError>,
    ) {
        let flags = offered_flags(true);
        let (mut a, first) = Handshake::dial("a@h", flags, 7, dialer_cookie, "b@h", 1234);
        let mut b = Handshake::accept("b@h", flags, 9, acceptor_cookie, 4_000_000_000);
        let mut to_b = vec![first];
        let mut to_a: Vec<Vec<u8>> = Vec::new();
        let (mut a_done, mut b_done) = (None, None);
        for _ in 0..10 {
            for p in std::mem::take(&mut to_b) {
                match b.handle(&p) {
                    Ok(actions) => {
                        for act in actions {
                            match act {
                                Action::Send(p) => to_a.push(p),
                                Action::Decide(peer) => {
                                    assert_eq!(peer.name, "a@h");
                                    assert_eq!(peer.creation, 7);
                                    to_a.extend(sends(&b.decide(status)));
                                }
                                Action::Done(peer) => b_done = Some(Ok(peer)),
                                Action::AskAlive => panic!("the acceptor is never asked"),
                            }
                        }
                    }
                    Err(e) => b_done = Some(Err(e)),
                }
            }
            for p in std::mem::take(&mut to_a) {
                match a.handle(&p) {
                    Ok(actions) => {
                        for act in actions {
                            match act {
                                Action::Send(p) => to_b.push(p),
                                Action::Done(peer) => a_done = Some(Ok(peer)),
                                Action::AskAlive => to_b.extend(sends(&a.answer_alive(true))),
                                Action::Decide(_) => panic!("the dialer never decides"),
                            }
                        }
                    }
                    Err(e) => a_done = Some(Err(e)),
                }
            }
        }
        (
            a_done.unwrap_or(Err(malformed("dialer unfinished"))),
            b_done.unwrap_or(Err(malformed("acceptor unfinished"))),
        )
    }

    #[test]
    fn digest_is_md5_of_cookie_and_decimal_challenge() {
        // md5("secret1234") and md5("secret4000000000"), computed with
        // Python's hashlib: the challenge is unsigned decimal text.
        let hex = |d: [u8; 16]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
        assert_eq!(
            hex(digest(b"secret", 1234)),
            "bdfc2db0aa599f5919e565c328216a51"
        );
        assert_eq!(
            hex(digest(b"secret", 4_000_000_000)),
            "068283266ffc7df6091e084e0e32bdd2"
        );
        assert_ne!(digest(b"secret", 1234), digest(b"secret", 1235));
        assert_ne!(digest(b"secret", 1234), digest(b"secreT", 1234));
    }

    #[test]
    fn both_sides_finish_with_the_same_cookie() {
        let (a, b) = run(COOKIE, COOKIE, Status::Ok);
        let a = a.unwrap();
        let b = b.unwrap();
        assert_eq!(a.name, "b@h");
        assert_eq!(a.creation, 9);
        assert_eq!(b.name, "a@h");
        assert_eq!(b.flags, offered_flags(true));
    }

    #[test]
    fn alive_is_answered_true_and_goes_on() {
        let (a, b) = run(COOKIE, COOKIE, Status::Alive);
        assert!(a.is_ok() && b.is_ok(), "{a:?} {b:?}");
    }

    #[test]
    fn alive_answered_false_ends_both_sides() {
        let flags = offered_flags(true);
        let (mut a, first) = Handshake::dial("a@h", flags, 1, COOKIE, "b@h", 1);
        let mut b = Handshake::accept("b@h", flags, 2, COOKIE, 2);
        assert!(matches!(b.handle(&first).unwrap()[..], [Action::Decide(_)]));
        let status = sends(&b.decide(Status::Alive));
        assert_eq!(a.handle(&status[0]).unwrap(), vec![Action::AskAlive]);
        let answer = sends(&a.answer_alive(false));
        assert_eq!(answer, vec![b"sfalse".to_vec()]);
        assert!(a.is_over());
        assert_eq!(
            b.handle(&answer[0]),
            Err(ErlHandshakeError::AlreadyConnected)
        );
    }

    #[test]
    fn a_wrong_cookie_fails_at_the_acceptor_and_the_dialer_learns_nothing() {
        let (a, b) = run(b"wrong", COOKIE, Status::Ok);
        assert_eq!(b, Err(ErlHandshakeError::AuthenticationFailed));
        // The acceptor never sent its digest.
        assert!(matches!(a, Err(ErlHandshakeError::Malformed(_))), "{a:?}");
    }

    #[test]
    fn nok_is_a_simultaneous_connect_and_not_allowed_a_refusal() {
        let (a, _) = run(COOKIE, COOKIE, Status::Nok);
        assert_eq!(a, Err(ErlHandshakeError::Simultaneous));
        let (a, _) = run(COOKIE, COOKIE, Status::NotAllowed);
        assert_eq!(a, Err(ErlHandshakeError::Refused("not_allowed".into())));
    }

    #[test]
    fn a_peer_without_the_required_flags_is_refused() {
        let mut b = Handshake::accept("b@h", offered_flags(true), 1, COOKIE, 1);
        let mut name = Vec::new();
        put_n(
            &mut name,
            REQUIRED_FLAGS & !flags::UNLINK_ID,
            None,
            1,
            "a@h",
        );
        assert_eq!(
            b.handle(&name),
            Err(ErlHandshakeError::MissingFlags {
                missing: flags::UNLINK_ID
            })
        );
    }

    #[test]
    fn malformed_packets_fail_without_panicking() {
        let mut good = Vec::new();
        put_n(&mut good, offered_flags(false), None, 5, "a@host");
        // Every truncation of a good name message, and garbage.
        for cut in 0..good.len() {
            let mut b = Handshake::accept("b@h", offered_flags(true), 1, COOKIE, 1);
            assert!(b.handle(&good[..cut]).is_err(), "prefix {cut}");
            assert!(b.is_over());
        }
        for junk in [
            &b"x"[..],
            b"s",
            b"r1234",
            b"N\xff\xff\xff\xff\xff\xff\xff\xff\0\0\0\0\xff\xff",
            &[b'N'; 2000],
        ] {
            let mut b = Handshake::accept("b@h", offered_flags(true), 1, COOKIE, 1);
            assert!(b.handle(junk).is_err());
        }
        // A name without '@', and one that is this node's own.
        for name in ["nohost", "b@h"] {
            let mut p = Vec::new();
            put_n(&mut p, offered_flags(true), None, 1, name);
            let mut b = Handshake::accept("b@h", offered_flags(true), 1, COOKIE, 1);
            assert!(matches!(b.handle(&p), Err(ErlHandshakeError::Malformed(_))));
        }
        // The old version-5 name message is refused with a reason.
        let mut b = Handshake::accept("b@h", offered_flags(true), 1, COOKIE, 1);
        let err = b.handle(b"n\0\x05\0\0\0\0a@h").unwrap_err();
        assert!(err.to_string().contains("version 6 only"), "{err}");
    }

    #[test]
    fn the_dialer_refuses_a_peer_that_is_not_the_node_it_dialed() {
        let flags = offered_flags(true);
        let (mut a, _) = Handshake::dial("a@h", flags, 1, COOKIE, "b@h", 1);
        a.handle(b"sok").unwrap();
        let mut ch = Vec::new();
        put_n(&mut ch, flags, Some(5), 1, "c@h");
        assert!(matches!(
            a.handle(&ch),
            Err(ErlHandshakeError::WrongPeer { .. })
        ));
    }
}
