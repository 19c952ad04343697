//! The gossip packet envelope: authenticated, bounded, and refused when it
//! belongs to another cluster. No I/O: the membership driver seals what it
//! sends and opens what it receives, and counts every refusal by its kind.
//!
//! ```text
//! magic "JG" | version:u8 | cluster:u64 | body | tag:16
//! ```
//!
//! - `cluster` is the 64-bit FNV-1a hash of the cluster name, so a packet of
//!   another cluster is told apart (and counted) before its tag is checked.
//! - `tag` is HMAC-SHA256 over everything before it, truncated to 16 bytes,
//!   keyed by HMAC-SHA256(cookie, "joerl-gossip-v1" ‖ cluster name): a node
//!   without the cookie can neither join nor inject members, and a key is
//!   never shared between two clusters of one cookie.
//! - A packet larger than the configured maximum is refused before anything
//!   else is read from it.
//!
//! Not covered: replay. A recorded packet can be sent again; SWIM's
//! incarnation numbers make an old packet lose to newer news about a member,
//! which bounds what a replay can do to reviving a member's older state until
//! the next gossip round corrects it.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

const MAGIC: &[u8; 2] = b"JG";
/// The envelope's version byte.
pub(crate) const VERSION: u8 = 1;
const HEADER: usize = 2 + 1 + 8;
const TAG: usize = 16;
/// The smallest packet: a header, an empty body and a tag.
pub(crate) const MIN_PACKET: usize = HEADER + TAG;

/// Why a packet was refused. Each kind has its own counter in the node's
/// gossip statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// Shorter than a header and a tag.
    #[error("truncated gossip packet ({0} bytes)")]
    Truncated(usize),
    /// Larger than the configured `max_packet_size`.
    #[error("gossip packet of {size} bytes is over the {limit}-byte limit")]
    Oversized {
        /// The packet's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Not a joerl gossip packet (wrong magic).
    #[error("not a joerl gossip packet")]
    NotGossip,
    /// A version this node does not speak.
    #[error("gossip packet version {0}, this node speaks {VERSION}")]
    Version(u8),
    /// A packet of another cluster name.
    #[error("gossip packet of another cluster")]
    WrongCluster,
    /// The tag does not match: another cookie, or a packet altered on the way.
    #[error("gossip packet failed authentication (another cookie, or altered)")]
    BadTag,
}

/// Seals and opens the packets of one cluster under one cookie.
#[derive(Clone)]
pub struct PacketKey {
    mac: HmacSha256,
    cluster: u64,
    max_size: usize,
}

impl std::fmt::Debug for PacketKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PacketKey")
            .field("cluster", &format_args!("{:#018x}", self.cluster))
            .field("max_size", &self.max_size)
            .finish_non_exhaustive()
    }
}

/// What the cookie is keyed with to make a cluster's gossip key.
pub fn key_context(cluster_name: &str) -> Vec<u8> {
    let mut c = b"joerl-gossip-v1".to_vec();
    c.extend_from_slice(cluster_name.as_bytes());
    c
}

/// The 64-bit FNV-1a hash of a cluster name.
pub(crate) fn cluster_id(name: &str) -> u64 {
    crate::registry::wire_id(name)
}

impl PacketKey {
    /// The key of cluster `cluster_name` under `cookie`, for packets of at
    /// most `max_size` bytes (the envelope included).
    pub fn new(cookie: &str, cluster_name: &str, max_size: usize) -> Self {
        let mut derive =
            HmacSha256::new_from_slice(cookie.as_bytes()).expect("HMAC takes any key length");
        derive.update(&key_context(cluster_name));
        Self::from_key(&derive.finalize().into_bytes(), cluster_name, max_size)
    }

    /// The key of cluster `cluster_name` from an already derived key: what
    /// `DistributedSystem::derive_key(&key_context(cluster_name))` gives.
    pub fn from_key(key: &[u8], cluster_name: &str, max_size: usize) -> Self {
        PacketKey {
            mac: HmacSha256::new_from_slice(key).expect("HMAC takes any key length"),
            cluster: cluster_id(cluster_name),
            max_size,
        }
    }

    /// The most body bytes one packet can carry.
    pub fn max_body(&self) -> usize {
        self.max_size.saturating_sub(MIN_PACKET)
    }

    /// Appends the sealed packet of `body` to `out` (cleared first). A body
    /// over [`max_body`](Self::max_body) gives `Oversized` and leaves `out`
    /// empty.
    pub fn seal(&self, body: &[u8], out: &mut Vec<u8>) -> Result<(), PacketError> {
        out.clear();
        let size = body.len() + MIN_PACKET;
        if size > self.max_size {
            return Err(PacketError::Oversized {
                size,
                limit: self.max_size,
            });
        }
        out.reserve(size);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&self.cluster.to_be_bytes());
        out.extend_from_slice(body);
        let mut mac = self.mac.clone();
        mac.update(out);
        let tag = mac.finalize().into_bytes();
        out.extend_from_slice(&tag[..TAG]);
        Ok(())
    }

    /// The body of `packet` if it is a packet of this cluster, sealed under
    /// this key, within the size limit; the reason otherwise.
    pub fn open<'a>(&self, packet: &'a [u8]) -> Result<&'a [u8], PacketError> {
        if packet.len() > self.max_size {
            return Err(PacketError::Oversized {
                size: packet.len(),
                limit: self.max_size,
            });
        }
        if packet.len() < MIN_PACKET {
            return Err(PacketError::Truncated(packet.len()));
        }
        if &packet[..2] != MAGIC {
            return Err(PacketError::NotGossip);
        }
        if packet[2] != VERSION {
            return Err(PacketError::Version(packet[2]));
        }
        let cluster = u64::from_be_bytes(packet[3..HEADER].try_into().expect("8 bytes"));
        if cluster != self.cluster {
            return Err(PacketError::WrongCluster);
        }
        let (signed, tag) = packet.split_at(packet.len() - TAG);
        let mut mac = self.mac.clone();
        mac.update(signed);
        mac.verify_truncated_left(tag)
            .map_err(|_| PacketError::BadTag)?;
        Ok(&signed[HEADER..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn key() -> PacketKey {
        PacketKey::new("cookie", "prod", 1400)
    }

    #[test]
    fn a_sealed_packet_opens_to_its_body() {
        let k = key();
        let mut out = Vec::new();
        k.seal(b"hello members", &mut out).unwrap();
        assert_eq!(out.len(), 13 + MIN_PACKET);
        assert_eq!(k.open(&out).unwrap(), b"hello members");
        k.seal(b"", &mut out).unwrap();
        assert_eq!(k.open(&out).unwrap(), b"");
    }

    #[test]
    fn another_cookie_or_cluster_cannot_open_it() {
        let mut out = Vec::new();
        key().seal(b"join me", &mut out).unwrap();
        assert_eq!(
            PacketKey::new("other", "prod", 1400).open(&out),
            Err(PacketError::BadTag)
        );
        assert_eq!(
            PacketKey::new("cookie", "staging", 1400).open(&out),
            Err(PacketError::WrongCluster)
        );
    }

    #[test]
    fn size_limits_hold_both_ways() {
        let k = key();
        let mut out = vec![1, 2, 3];
        let err = k.seal(&vec![0; k.max_body() + 1], &mut out).unwrap_err();
        assert!(matches!(err, PacketError::Oversized { .. }));
        assert!(out.is_empty());
        k.seal(&vec![0; k.max_body()], &mut out).unwrap();
        assert_eq!(out.len(), 1400);
        assert!(k.open(&out).is_ok());
        let big = vec![0u8; 1401];
        assert!(matches!(k.open(&big), Err(PacketError::Oversized { .. })));
        assert_eq!(k.open(&[0; 5]), Err(PacketError::Truncated(5)));
    }

    #[test]
    fn random_and_mutated_packets_are_all_refused() {
        let k = key();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut good = Vec::new();
        k.seal(b"a gossip body of some length", &mut good).unwrap();
        let mut refused = 0;
        for i in 0..5_000 {
            let packet: Vec<u8> = match i % 4 {
                // Random bytes of random length.
                0 => (0..rng.random_range(0..2000))
                    .map(|_| rng.random())
                    .collect(),
                // The good packet with one byte flipped.
                1 => {
                    let mut p = good.clone();
                    let at = rng.random_range(0..p.len());
                    p[at] ^= 1 << rng.random_range(0..8);
                    p
                }
                // The good packet cut short.
                2 => good[..rng.random_range(0..good.len())].to_vec(),
                // The good header with a random rest.
                _ => {
                    let mut p = good[..HEADER].to_vec();
                    p.extend((0..rng.random_range(0..200)).map(|_| rng.random::<u8>()));
                    p
                }
            };
            if k.open(&packet).is_err() {
                refused += 1;
            }
        }
        assert_eq!(refused, 5_000, "every altered packet is refused");
        assert_eq!(k.open(&good).unwrap(), b"a gossip body of some length");
    }
}
