//! Where an identity lives: rendezvous (highest random weight) hashing over
//! the candidate members, behind the [`Placement`] seam so other strategies
//! fit.
//!
//! The hash is part of the wire contract (every node must compute the same
//! owner), so it is written down and never `DefaultHasher`:
//! [`stable_hash`] is 64-bit FNV-1a over each part prefixed by its length
//! (4 bytes, little-endian), then the splitmix64 finalizer. A member's score
//! for an identity is `weight / -ln(u)`, where `u` in (0, 1) comes from the
//! hash of (node name, kind, id) (weighted rendezvous hashing); the highest
//! score owns it, ties to the smaller node name. Adding a member moves only
//! the identities the new member now wins (about 1/N of them); removing one
//! moves only its own.

use serde::{Deserialize, Serialize};

/// An actor's identity in the cluster: its kind's registered name and its id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Identity {
    /// The kind's registered name.
    pub kind: String,
    /// The id within the kind.
    pub id: String,
}

impl Identity {
    /// The identity `(kind, id)`.
    pub fn new(kind: impl Into<String>, id: impl Into<String>) -> Self {
        Identity {
            kind: kind.into(),
            id: id.into(),
        }
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.kind, self.id)
    }
}

/// A member identities may be placed on.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// Its node name.
    pub node: String,
    /// Its weight (> 0; 1 unless its metadata says otherwise, see
    /// [`WEIGHT_KEY`]): a member of weight 2 gets about twice the share.
    pub weight: f64,
    /// Identities active on it now, as this node knows (for load-aware
    /// strategies).
    pub load: usize,
    /// True for this node.
    pub local: bool,
}

impl Candidate {
    /// A candidate of weight 1 and no known load.
    pub fn new(node: impl Into<String>) -> Self {
        Candidate {
            node: node.into(),
            weight: 1.0,
            load: 0,
            local: false,
        }
    }
}

/// The member metadata key that sets a member's placement weight (a
/// positive number; anything else counts as 1).
pub const WEIGHT_KEY: &str = "placement.weight";

/// A member's weight from its metadata value.
pub fn weight_from(value: Option<&str>) -> f64 {
    value
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|w| w.is_finite() && *w > 0.0)
        .unwrap_or(1.0)
}

/// Chooses the owner of an identity among candidates.
pub trait Placement: Send + Sync + 'static {
    /// The index in `candidates` of the owner of `identity`; `None` if
    /// there is no candidate. Strategies that are not a function of the
    /// candidates alone (load, locality) give different answers on
    /// different nodes: their choice must be recorded where every node
    /// reads it (the leader's directory), not recomputed.
    fn place(&self, identity: &Identity, candidates: &[Candidate]) -> Option<usize>;

    /// True if every node computes the same owner from the same candidates
    /// (so routing needs no directory lookup).
    fn is_deterministic(&self) -> bool;
}

/// 64-bit FNV-1a over each part prefixed by its length, then splitmix64's
/// finalizer (see the module docs): stable across builds, platforms and
/// releases.
pub fn stable_hash(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: u8| {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    };
    for p in parts {
        for b in (p.len() as u32).to_le_bytes() {
            eat(b);
        }
        for &b in *p {
            eat(b);
        }
    }
    let mut z = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `node`'s rendezvous score for `identity` with `weight`.
pub fn score(node: &str, identity: &Identity, weight: f64) -> f64 {
    let h = stable_hash(&[
        node.as_bytes(),
        identity.kind.as_bytes(),
        identity.id.as_bytes(),
    ]);
    // u in (0, 1): the top 53 bits, offset by half a step.
    let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    weight / -u.ln()
}

/// Rendezvous hashing: the default placement.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rendezvous;

impl Placement for Rendezvous {
    fn place(&self, identity: &Identity, candidates: &[Candidate]) -> Option<usize> {
        let mut best: Option<(usize, f64)> = None;
        for (i, c) in candidates.iter().enumerate() {
            let s = score(&c.node, identity, c.weight);
            let better = match best {
                None => true,
                Some((j, b)) => s > b || (s == b && c.node < candidates[j].node),
            };
            if better {
                best = Some((i, s));
            }
        }
        best.map(|(i, _)| i)
    }

    fn is_deterministic(&self) -> bool {
        true
    }
}

/// The least-loaded candidate (ties by rendezvous); needs the directory.
#[derive(Debug, Clone, Copy, Default)]
pub struct LeastLoaded;

impl Placement for LeastLoaded {
    fn place(&self, identity: &Identity, candidates: &[Candidate]) -> Option<usize> {
        let least = candidates.iter().map(|c| c.load).min()?;
        let tied: Vec<Candidate> = candidates
            .iter()
            .filter(|c| c.load == least)
            .cloned()
            .collect();
        let pick = Rendezvous.place(identity, &tied)?;
        candidates.iter().position(|c| c.node == tied[pick].node)
    }

    fn is_deterministic(&self) -> bool {
        false
    }
}

/// This node if it is a candidate, else rendezvous; needs the directory.
#[derive(Debug, Clone, Copy, Default)]
pub struct PreferLocal;

impl Placement for PreferLocal {
    fn place(&self, identity: &Identity, candidates: &[Candidate]) -> Option<usize> {
        candidates
            .iter()
            .position(|c| c.local)
            .or_else(|| Rendezvous.place(identity, candidates))
    }

    fn is_deterministic(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: usize) -> Vec<Candidate> {
        (1..=n)
            .map(|i| Candidate::new(format!("n{i}@127.0.0.1")))
            .collect()
    }

    fn owner(c: &[Candidate], id: &Identity) -> String {
        c[Rendezvous.place(id, c).unwrap()].node.clone()
    }

    /// `stable_hash(["n1@host", "counter", "7"])`, computed from the
    /// documented steps by a separate Python implementation.
    const GOLDEN: u64 = 5_897_366_631_309_321_617;

    #[test]
    fn the_hash_is_the_documented_one() {
        // Fixed values: a change here changes every node's placement.
        assert_eq!(stable_hash(&[b"n1@host", b"counter", b"7"]), GOLDEN);
        let a = stable_hash(&[b"ab", b"c"]);
        let b = stable_hash(&[b"a", b"bc"]);
        assert_ne!(a, b, "parts are length-prefixed");
        assert_eq!(
            stable_hash(&[b"n1", b"counter", b"7"]),
            stable_hash(&[b"n1", b"counter", b"7"])
        );
    }

    #[test]
    fn a_fifth_node_takes_about_a_fifth_and_only_to_itself() {
        let four = nodes(4);
        let five = nodes(5);
        let ids: Vec<Identity> = (0..10_000)
            .map(|i| Identity::new("counter", i.to_string()))
            .collect();
        let mut moved = 0;
        let mut per_node = std::collections::HashMap::new();
        for id in &ids {
            let (before, after) = (owner(&four, id), owner(&five, id));
            *per_node.entry(before.clone()).or_insert(0) += 1;
            if before != after {
                moved += 1;
                assert_eq!(after, "n5@127.0.0.1", "{id} moved between old members");
            }
        }
        let share = moved as f64 / ids.len() as f64;
        assert!((0.17..=0.23).contains(&share), "moved {share}");
        // Balanced within 10% of the mean.
        for (n, c) in per_node {
            assert!((2250..=2750).contains(&c), "{n} owns {c}");
        }
        // Removing a member moves only its identities.
        let three: Vec<Candidate> = four[..3].to_vec();
        for id in &ids {
            let before = owner(&four, id);
            if before != "n4@127.0.0.1" {
                assert_eq!(owner(&three, id), before);
            }
        }
    }

    #[test]
    fn weights_shift_the_share_and_strategies_pick_as_documented() {
        let mut c = nodes(2);
        c[1].weight = 3.0;
        let ids: Vec<Identity> = (0..10_000)
            .map(|i| Identity::new("k", i.to_string()))
            .collect();
        let heavy = ids.iter().filter(|id| owner(&c, id) == c[1].node).count();
        assert!((7000..=8000).contains(&heavy), "weight 3 of 4 owns {heavy}");
        assert_eq!(weight_from(Some("2.5")), 2.5);
        for bad in [
            None,
            Some("0"),
            Some("-1"),
            Some("x"),
            Some("inf"),
            Some("NaN"),
        ] {
            assert_eq!(weight_from(bad), 1.0, "{bad:?}");
        }
        let mut c = nodes(3);
        c[0].load = 5;
        c[1].load = 1;
        c[2].load = 1;
        let id = Identity::new("k", "1");
        let pick = LeastLoaded.place(&id, &c).unwrap();
        assert!(pick == 1 || pick == 2);
        c[2].local = true;
        assert_eq!(PreferLocal.place(&id, &c), Some(2));
        assert_eq!(Rendezvous.place(&id, &[]), None);
        assert!(Rendezvous.is_deterministic() && !LeastLoaded.is_deterministic());
    }
}
