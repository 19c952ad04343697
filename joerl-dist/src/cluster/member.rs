//! Who a cluster member is, as SWIM (foca) sees it, and how members and
//! foca's headers are written inside a gossip packet. No I/O.
//!
//! A member is known by its gossip address; what it carries beside it is what
//! the node layer needs to reach it (its node name, dist address and
//! creation) and a small metadata map. A member that was declared down, or
//! that left, comes back with a higher `rejoin` count (`MemberId::renew`, foca's `Identity::renew`), so
//! SWIM takes it for the newer identity at the same address.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use bytes::{Buf, BufMut};
use serde::{Deserialize, Serialize};

/// The identity of one member.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MemberId {
    /// The node's full name (`name@host`).
    pub node: String,
    /// Where its gossip socket listens: the member's unique address.
    pub gossip: SocketAddr,
    /// Where its distribution listener accepts connections.
    pub dist: SocketAddr,
    /// The node's creation (tells its incarnations apart).
    pub creation: u32,
    /// How many times this incarnation rejoined after being declared down.
    pub rejoin: u32,
    /// Roles, version and the like (bounded by the configuration).
    pub metadata: BTreeMap<String, String>,
}

impl foca::Identity for MemberId {
    type Addr = SocketAddr;

    /// A member declared down rejoins as the same node with the next rejoin
    /// count: the cluster takes it for a newer identity at its address.
    fn renew(&self) -> Option<Self> {
        Some(MemberId {
            rejoin: self.rejoin.wrapping_add(1),
            ..self.clone()
        })
    }

    fn addr(&self) -> SocketAddr {
        self.gossip
    }

    /// Of two identities at one address, a later creation wins (a restarted
    /// node), then a higher rejoin count.
    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        (self.creation, self.rejoin) > (adversary.creation, adversary.rejoin)
    }
}

/// Why a header or member could not be written or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemberCodecError {
    /// The buffer has no room for the item (nothing was written).
    #[error("no room for {needed} bytes in the gossip packet ({room} left)")]
    NoRoom {
        /// Bytes the item needs.
        needed: usize,
        /// Bytes left.
        room: usize,
    },
    /// The bytes are not a valid item.
    #[error("malformed gossip item: {0}")]
    Malformed(String),
}

/// foca's [`Codec`](foca::Codec) for [`MemberId`]: the joerl codec (bincode
/// of serde's derive, in `codec.rs`), with its limit on what decoding may
/// claim.
#[derive(Debug, Default, Clone, Copy)]
pub struct MemberCodec;

fn encode<V: Serialize>(value: &V, mut buf: impl BufMut) -> Result<(), MemberCodecError> {
    let mut bytes = Vec::new();
    crate::codec::encode_into(value, &mut bytes)
        .map_err(|e| MemberCodecError::Malformed(e.to_string()))?;
    if buf.remaining_mut() < bytes.len() {
        return Err(MemberCodecError::NoRoom {
            needed: bytes.len(),
            room: buf.remaining_mut(),
        });
    }
    buf.put_slice(&bytes);
    Ok(())
}

fn decode<V: serde::de::DeserializeOwned>(mut buf: impl Buf) -> Result<V, MemberCodecError> {
    let (value, used) = crate::codec::decode_prefix(buf.chunk())
        .map_err(|e| MemberCodecError::Malformed(e.to_string()))?;
    buf.advance(used);
    Ok(value)
}

impl foca::Codec<MemberId> for MemberCodec {
    type Error = MemberCodecError;

    fn encode_header(
        &mut self,
        header: &foca::Header<MemberId>,
        buf: impl BufMut,
    ) -> Result<(), Self::Error> {
        encode(header, buf)
    }

    fn decode_header(&mut self, buf: impl Buf) -> Result<foca::Header<MemberId>, Self::Error> {
        decode(buf)
    }

    fn encode_member(
        &mut self,
        member: &foca::Member<MemberId>,
        buf: impl BufMut,
    ) -> Result<(), Self::Error> {
        encode(member, buf)
    }

    fn decode_member(&mut self, buf: impl Buf) -> Result<foca::Member<MemberId>, Self::Error> {
        decode(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::{Codec, Identity};

    fn id(port: u16, creation: u32) -> MemberId {
        MemberId {
            node: format!("n{port}@127.0.0.1"),
            gossip: SocketAddr::from(([127, 0, 0, 1], port)),
            dist: SocketAddr::from(([127, 0, 0, 1], port + 1)),
            creation,
            rejoin: 0,
            metadata: [("role".to_string(), "worker".to_string())].into(),
        }
    }

    #[test]
    fn a_renewed_or_restarted_identity_wins_its_address() {
        let a = id(7000, 5);
        let renewed = a.renew().unwrap();
        assert_eq!(renewed.addr(), a.addr());
        assert!(renewed.win_addr_conflict(&a));
        assert!(!a.win_addr_conflict(&renewed));
        let restarted = id(7000, 6);
        assert!(restarted.win_addr_conflict(&renewed), "a new creation wins");
    }

    #[test]
    fn members_round_trip_and_no_room_leaves_the_buffer_clean() {
        let mut codec = MemberCodec;
        let member = foca::Member::alive(id(7000, 1));
        let mut buf = Vec::new();
        codec.encode_member(&member, &mut buf).unwrap();
        let back = codec.decode_member(&buf[..]).unwrap();
        assert_eq!(back, member);

        let mut small = [0u8; 8];
        let mut slice = &mut small[..];
        let err = codec.encode_member(&member, &mut slice).unwrap_err();
        assert!(matches!(err, MemberCodecError::NoRoom { .. }));
        assert_eq!(small, [0u8; 8], "nothing written");
    }

    #[test]
    fn truncated_or_garbage_items_are_errors_not_panics() {
        let mut codec = MemberCodec;
        let mut buf = Vec::new();
        codec
            .encode_member(&foca::Member::alive(id(7000, 1)), &mut buf)
            .unwrap();
        for cut in 0..buf.len() {
            assert!(codec.decode_member(&buf[..cut]).is_err(), "cut at {cut}");
        }
        // A forged huge length for the node name stops at the limit.
        let forged = [0xfc, 0xff, 0xff, 0xff, 0x7f, b'a'];
        assert!(codec.decode_member(&forged[..]).is_err());
    }
}
