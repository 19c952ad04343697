//! The connection handshake: records and proofs, no I/O.
//!
//! Six HANDSHAKE frames open every connection (seven after `Alive`):
//!
//! ```text
//! dialer   -> acceptor  Hello   { name, node_id, creation, capabilities, challenge_d }
//! acceptor -> dialer    Welcome { name, node_id, creation, capabilities, challenge_a }
//!                    or Refused { reason }
//! dialer   -> acceptor  Proof   { HMAC(cookie, "dialer"   | challenge_a | challenge_d | name_d | name_a) }
//! acceptor -> dialer    Proof   { HMAC(cookie, "acceptor" | challenge_d | challenge_a | name_a | name_d) }
//!                    or Refused { AuthenticationFailed | Simultaneous | AlreadyConnected | ... }
//!                    or Alive  { the acceptor's Proof } (see below), then
//! dialer   -> acceptor  Continue { bool }
//! both, at once:        Resume  { kept, received }
//! ```
//!
//! `Resume` ends the handshake: each side says whether it kept the session
//! with the other's incarnation (it was mending a cut and reported nothing)
//! and how many of the other's data frames it has read. If both kept it, each
//! replays what the other has not read and the session goes on; otherwise a
//! new session starts (and a side that kept the old one reports the node down
//! first). A side sends its count only once the reader of its previous
//! connection has stopped, so the count is final.
//!
//! `Alive` is the acceptor's answer when it still has a connection up to the very
//! incarnation that is dialing (Erlang's `alive` status): a dialer only dials
//! when it has no connection, so the acceptor's is probably half-open (its peer
//! vanished without a FIN, or the dialer already gave it up). The dialer answers
//! `Continue(true)` if it still has no connection to the acceptor, and the
//! acceptor then closes the old connection and the new one is up; with
//! `Continue(false)` (a connection came up meanwhile) both drop the new one.
//! `Alive` carries the acceptor's proof, which the dialer checks before it
//! answers, so only a node that knows the cookie learns the answer.
//!
//! Every frame carries the protocol version in its header. Challenges are 32
//! random bytes. Each proof is HMAC-SHA256 keyed by the cookie over a role label,
//! both challenges (own side's first) and both names, so a proof can be neither
//! replayed on another connection nor reflected back at its sender. The dialer
//! proves first and the acceptor only answers a valid proof, so a peer without the
//! cookie learns nothing it could use. Proofs are compared in constant time.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// The handshake protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 3;

/// Capability bits announced in the handshake.
pub mod capabilities {
    /// Links, monitors and exits travel as SIGNAL frames.
    pub const SIGNALS: u64 = 1 << 0;
    /// Named sends (`{name, node}`) as SEND_NAMED frames.
    pub const NAMED_SEND: u64 = 1 << 1;
    /// Everything this build supports.
    pub const ALL: u64 = SIGNALS | NAMED_SEND;
}

/// A 32-byte random challenge.
pub type Challenge = [u8; 32];

/// A 32-byte HMAC-SHA256 proof.
pub type Proof = [u8; 32];

/// One handshake record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    /// The dialer introduces itself.
    Hello(Intro),
    /// The acceptor agrees and introduces itself.
    Welcome(Intro),
    /// One side refuses; the connection closes.
    Refused(RefuseReason),
    /// Proof of knowing the cookie.
    Proof(Proof),
    /// The acceptor's proof, and: it already has a connection up to this
    /// incarnation of the dialer; the dialer answers with `Continue`.
    Alive(Proof),
    /// The dialer's answer to `Alive`: `true` to replace the acceptor's old
    /// connection with this one, `false` to drop this one.
    Continue(bool),
    /// Where the sender stands in the session with the other side: the last
    /// record each side sends (both send theirs, then read the other's).
    Resume(ResumePoint),
}

/// What one side tells the other at the end of the handshake, so that a
/// session cut by a lost connection can be resumed on the new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumePoint {
    /// The sender kept the session with the other side's incarnation: it was
    /// mending a cut to it and has reported nothing.
    pub kept: bool,
    /// Data frames (messages and signals) the sender has read from the other
    /// side's incarnation, over all their connections: the other side replays
    /// what follows, if both kept the session.
    pub received: u64,
}

/// What each side says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intro {
    /// Full node name, `name@host`.
    pub name: String,
    /// `joerl_core::node_id(name)`.
    pub node_id: u32,
    /// The node's incarnation.
    pub creation: u32,
    /// Capability bits.
    pub capabilities: u64,
    /// The challenge the other side must answer.
    pub challenge: Challenge,
}

/// Why a side refuses a connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefuseReason {
    /// Another protocol version is required.
    Version {
        /// The version the refusing side speaks.
        supported: u16,
    },
    /// The proof did not match: the cookies differ.
    AuthenticationFailed,
    /// The name and node id do not match, or the id collides with another node's.
    NodeIdCollision(String),
    /// Both sides dialed at once; the other direction's connection wins.
    Simultaneous,
    /// A connection with this peer incarnation is already up.
    AlreadyConnected,
    /// The refusing node is shutting down.
    ShuttingDown,
    /// Other reasons, as text.
    Other(String),
}

impl std::fmt::Display for RefuseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RefuseReason::Version { supported } => {
                write!(f, "protocol version {supported} required")
            }
            RefuseReason::AuthenticationFailed => f.write_str("authentication failed"),
            RefuseReason::NodeIdCollision(s) => write!(f, "node id collision: {s}"),
            RefuseReason::Simultaneous => f.write_str("simultaneous connect"),
            RefuseReason::AlreadyConnected => f.write_str("already connected"),
            RefuseReason::ShuttingDown => f.write_str("node shutting down"),
            RefuseReason::Other(s) => f.write_str(s),
        }
    }
}

/// Which side of the connection computes a proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The side that opened the TCP connection.
    Dialer,
    /// The side that accepted it.
    Acceptor,
}

fn mac_input(
    mac: &mut Hmac<Sha256>,
    role: Role,
    own_name: &str,
    peer_name: &str,
    own: &Challenge,
    theirs: &Challenge,
) {
    let label: &[u8] = match role {
        Role::Dialer => b"joerl-dist/2 dialer",
        Role::Acceptor => b"joerl-dist/2 acceptor",
    };
    mac.update(label);
    // The challenge being answered (the peer's) comes first, then our own.
    mac.update(theirs);
    mac.update(own);
    for name in [own_name, peer_name] {
        mac.update(&(name.len() as u32).to_be_bytes());
        mac.update(name.as_bytes());
    }
}

/// The proof `role` sends: it answers `theirs` (the peer's challenge) and binds
/// `own` (our challenge) and both names.
pub fn prove(
    cookie: &[u8],
    role: Role,
    own_name: &str,
    peer_name: &str,
    own: &Challenge,
    theirs: &Challenge,
) -> Proof {
    let mut mac = Hmac::<Sha256>::new_from_slice(cookie).expect("HMAC takes keys of any length");
    mac_input(&mut mac, role, own_name, peer_name, own, theirs);
    mac.finalize().into_bytes().into()
}

/// Checks, in constant time, a proof the peer (playing `peer_role`) sent.
pub fn verify(
    cookie: &[u8],
    peer_role: Role,
    peer_name: &str,
    own_name: &str,
    peer_challenge: &Challenge,
    own_challenge: &Challenge,
    proof: &Proof,
) -> bool {
    let mut mac = Hmac::<Sha256>::new_from_slice(cookie).expect("HMAC takes keys of any length");
    mac_input(
        &mut mac,
        peer_role,
        peer_name,
        own_name,
        peer_challenge,
        own_challenge,
    );
    mac.verify_slice(proof).is_ok()
}

/// A fresh random challenge.
pub fn challenge() -> Challenge {
    let mut c = [0u8; 32];
    rand::fill(&mut c);
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_verify_only_with_the_same_cookie() {
        let (cd, ca) = (challenge(), challenge());
        let p = prove(b"secret", Role::Dialer, "a@h", "b@h", &cd, &ca);
        assert!(verify(b"secret", Role::Dialer, "a@h", "b@h", &cd, &ca, &p));
        assert!(!verify(b"other", Role::Dialer, "a@h", "b@h", &cd, &ca, &p));
    }

    #[test]
    fn proofs_cannot_be_reflected_or_replayed() {
        let (cd, ca) = (challenge(), challenge());
        let p = prove(b"k", Role::Dialer, "a@h", "b@h", &cd, &ca);
        // The same bytes do not pass as the acceptor's proof.
        assert!(!verify(b"k", Role::Acceptor, "a@h", "b@h", &cd, &ca, &p));
        // Nor on a connection with another challenge, or between other names.
        assert!(!verify(
            b"k",
            Role::Dialer,
            "a@h",
            "b@h",
            &cd,
            &challenge(),
            &p
        ));
        assert!(!verify(b"k", Role::Dialer, "c@h", "b@h", &cd, &ca, &p));
    }
}
