//! Where identities are assigned, as kept in the metadata store: the key
//! layout and value format of assignments, and [`AssignmentView`], a
//! state machine with no I/O that follows them from a `list` and a `watch`
//! (a location cache fed by the store).
//!
//! Layout: `PREFIX/KIND/ID` (`PREFIX` is per cluster, e.g.
//! `joerl/CLUSTER/placement`), the id percent-escaped where it holds `/`,
//! `%` or control characters, so every identity has one key and keys list
//! by kind. The value is JSON: `{"node": "name@host", "creation": N}`
//! (the owner and its incarnation), written by the owner with its lease, so
//! a dead node's assignments vanish with it.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::{Entry, Revision, StoreError, WatchEvent};

/// Values longer than this are not an assignment joerl wrote.
pub const MAX_ASSIGNMENT_BYTES: usize = 1024;

/// An identity's owner, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Assignment {
    /// The owner node's name.
    pub node: String,
    /// The owner's incarnation (its `creation`): an assignment of an
    /// earlier incarnation of the same name is stale.
    pub creation: u32,
}

impl Assignment {
    /// The stored value.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an assignment encodes")
    }

    /// An assignment from a stored value; [`StoreError::Malformed`] (naming
    /// `key`) if it is not one joerl wrote.
    pub fn decode(key: &str, value: &[u8]) -> Result<Assignment, StoreError> {
        let bad = |reason: String| StoreError::Malformed {
            key: key.to_string(),
            reason,
        };
        if value.len() > MAX_ASSIGNMENT_BYTES {
            return Err(bad(format!(
                "{} bytes; an assignment is at most {MAX_ASSIGNMENT_BYTES}",
                value.len()
            )));
        }
        let a: Assignment = serde_json::from_slice(value)
            .map_err(|e| bad(format!("not an assignment ({e}); delete or rewrite it")))?;
        if a.node.is_empty() || !a.node.contains('@') {
            return Err(bad(format!("{:?} is not a node name (name@host)", a.node)));
        }
        Ok(a)
    }
}

/// The store key of `(kind, id)` under `prefix` (no trailing `/`).
/// `kind` must not hold `/` (placement refuses such kinds).
pub fn assignment_key(prefix: &str, kind: &str, id: &str) -> String {
    use std::fmt::Write;
    let mut k = String::with_capacity(prefix.len() + kind.len() + id.len() + 2);
    k.push_str(prefix);
    k.push('/');
    k.push_str(kind);
    k.push('/');
    for c in id.chars() {
        if c == '/' || c == '%' || c.is_control() {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                let _ = write!(k, "%{b:02X}");
            }
        } else {
            k.push(c);
        }
    }
    k
}

/// `(kind, id)` from a key under `prefix`, or why it is not an
/// assignment's key.
pub fn parse_assignment_key(prefix: &str, key: &str) -> Result<(String, String), StoreError> {
    let bad = |reason: &str| StoreError::Malformed {
        key: key.to_string(),
        reason: reason.to_string(),
    };
    let rest = key
        .strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('/'))
        .ok_or_else(|| bad("not under the assignments' prefix"))?;
    let (kind, escaped) = rest
        .split_once('/')
        .ok_or_else(|| bad("not PREFIX/KIND/ID"))?;
    if kind.is_empty() || escaped.is_empty() || escaped.contains('/') {
        return Err(bad("not PREFIX/KIND/ID"));
    }
    let mut bytes = Vec::with_capacity(escaped.len());
    let mut it = escaped.bytes();
    while let Some(b) = it.next() {
        if b == b'%' {
            let hex: Vec<u8> = it.by_ref().take(2).collect();
            let h = std::str::from_utf8(&hex)
                .ok()
                .filter(|h| h.len() == 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| bad("a bad %-escape in the id"))?;
            bytes.push(h);
        } else {
            bytes.push(b);
        }
    }
    let id = String::from_utf8(bytes).map_err(|_| bad("the id is not UTF-8"))?;
    Ok((kind.to_string(), id))
}

/// What a change did to an [`AssignmentView`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AssignmentChange {
    /// `(kind, id)` is now assigned to `to` (`from`: its owner before, if
    /// it had one). Cached routes and Pids of the identity are stale.
    Assigned {
        /// The identity's kind.
        kind: String,
        /// Its id.
        id: String,
        /// Its owner before.
        from: Option<Assignment>,
        /// Its owner now.
        to: Assignment,
    },
    /// `(kind, id)` has no owner any more (its owner's lease ended, or it
    /// was released): it is to be placed again.
    Released {
        /// The identity's kind.
        kind: String,
        /// Its id.
        id: String,
        /// Its owner before.
        from: Assignment,
    },
}

/// The assignments under one prefix as the store has them, followed from
/// a `list` ([`AssignmentView::load`]) and then a `watch` from the list's
/// revision ([`AssignmentView::apply`]); no I/O. Entries that are not
/// assignments joerl wrote are skipped and counted
/// ([`AssignmentView::malformed`]), each reason logged once per key.
#[derive(Debug, Default)]
pub struct AssignmentView {
    prefix: String,
    owners: HashMap<(String, String), Assignment>,
    /// The revision of the last listing: changes at or below it are in it.
    loaded: Revision,
    revision: Revision,
    malformed: u64,
}

impl AssignmentView {
    /// An empty view of the assignments under `prefix`.
    pub fn new(prefix: impl Into<String>) -> AssignmentView {
        AssignmentView {
            prefix: prefix.into(),
            ..AssignmentView::default()
        }
    }

    /// Replaces the view by a listing taken at `revision`; watch from it.
    pub fn load(&mut self, entries: &[Entry], revision: Revision) {
        self.owners.clear();
        for e in entries {
            if let Some((k, a)) = self.decode(&e.key, &e.value) {
                self.owners.insert(k, a);
            }
        }
        self.loaded = revision;
        self.revision = revision;
    }

    /// Applies one watched change; what it changed, if anything. Changes at
    /// or below the listing's revision (in it already) change nothing;
    /// several changes may share a revision (a lease's end deletes all its
    /// keys in one).
    pub fn apply(&mut self, event: &WatchEvent) -> Option<AssignmentChange> {
        if event.revision() <= self.loaded {
            return None;
        }
        self.revision = self.revision.max(event.revision());
        match event {
            WatchEvent::Put(e) => {
                let ((kind, id), to) = self.decode(&e.key, &e.value)?;
                let from = self.owners.insert((kind.clone(), id.clone()), to.clone());
                (from.as_ref() != Some(&to)).then_some(AssignmentChange::Assigned {
                    kind,
                    id,
                    from,
                    to,
                })
            }
            WatchEvent::Deleted { key, .. } => {
                let (kind, id) = parse_assignment_key(&self.prefix, key).ok()?;
                let from = self.owners.remove(&(kind.clone(), id.clone()))?;
                Some(AssignmentChange::Released { kind, id, from })
            }
        }
    }

    /// The owner of `(kind, id)`, if assigned.
    pub fn owner(&self, kind: &str, id: &str) -> Option<&Assignment> {
        self.owners.get(&(kind.to_string(), id.to_string()))
    }

    /// Assignments in the view.
    pub fn len(&self) -> usize {
        self.owners.len()
    }

    /// True if none.
    pub fn is_empty(&self) -> bool {
        self.owners.is_empty()
    }

    /// The store revision the view is at.
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// Entries skipped because they were not assignments joerl wrote.
    pub fn malformed(&self) -> u64 {
        self.malformed
    }

    fn decode(&mut self, key: &str, value: &[u8]) -> Option<((String, String), Assignment)> {
        let got = parse_assignment_key(&self.prefix, key)
            .and_then(|k| Assignment::decode(key, value).map(|a| (k, a)));
        match got {
            Ok(v) => Some(v),
            Err(error) => {
                self.malformed += 1;
                tracing::warn!(%error, "placement: an entry in the store is not an assignment; skipped");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, value: &[u8], rev: Revision) -> Entry {
        Entry {
            key: key.into(),
            value: value.to_vec(),
            create_revision: rev,
            mod_revision: rev,
            version: 1,
            lease: None,
        }
    }

    #[test]
    fn keys_round_trip_every_id() {
        for id in ["7", "a/b", "100%", "x\ny", "ünï/cødé", "%2F", " spaced "] {
            let k = assignment_key("joerl/c/placement", "app::Counter", id);
            assert_eq!(k.matches('/').count(), 4, "{k}");
            assert_eq!(
                parse_assignment_key("joerl/c/placement", &k).unwrap(),
                ("app::Counter".to_string(), id.to_string()),
                "{k}"
            );
        }
        assert_eq!(assignment_key("p", "K", "a/b"), "p/K/a%2Fb");
    }

    #[test]
    fn values_and_keys_joerl_did_not_write_are_malformed() {
        let good = Assignment {
            node: "a@h".into(),
            creation: 3,
        };
        assert_eq!(Assignment::decode("k", &good.encode()).unwrap(), good);
        for bad in [
            &b"garbage"[..],
            br#"{"node":"a@h"}"#,
            br#"{"node":"nohost","creation":1}"#,
            br#"{"node":"a@h","creation":1,"extra":2}"#,
            &[0xff; 10][..],
        ] {
            assert!(
                matches!(
                    Assignment::decode("k", bad),
                    Err(StoreError::Malformed { .. })
                ),
                "{bad:?}"
            );
        }
        assert!(Assignment::decode("k", &vec![b' '; MAX_ASSIGNMENT_BYTES + 1]).is_err());
        for key in [
            "other/K/1",
            "p/K",
            "p//1",
            "p/K/",
            "p/K/a/b",
            "p/K/%zz",
            "p/K/%f",
        ] {
            assert!(parse_assignment_key("p", key).is_err(), "{key}");
        }
    }

    #[test]
    fn a_view_follows_puts_and_deletes_in_revision_order_and_skips_the_malformed() {
        let a = Assignment {
            node: "a@h".into(),
            creation: 1,
        };
        let b = Assignment {
            node: "b@h".into(),
            creation: 1,
        };
        let mut v = AssignmentView::new("p");
        v.load(
            &[
                entry("p/K/1", &a.encode(), 5),
                entry("p/K/2", b"not json", 6),
                entry("p/K/3", &b.encode(), 7),
            ],
            10,
        );
        assert_eq!((v.len(), v.malformed(), v.revision()), (2, 1, 10));
        assert_eq!(v.owner("K", "1"), Some(&a));
        // Seen already (at or below the listing's revision): nothing.
        assert_eq!(
            v.apply(&WatchEvent::Put(entry("p/K/1", &b.encode(), 9))),
            None
        );
        assert_eq!(v.owner("K", "1"), Some(&a));
        // A move.
        assert_eq!(
            v.apply(&WatchEvent::Put(entry("p/K/1", &b.encode(), 11))),
            Some(AssignmentChange::Assigned {
                kind: "K".into(),
                id: "1".into(),
                from: Some(a.clone()),
                to: b.clone(),
            })
        );
        // The same owner written again: no change.
        assert_eq!(
            v.apply(&WatchEvent::Put(entry("p/K/1", &b.encode(), 12))),
            None
        );
        // A lease's end: its keys go in one revision.
        v.apply(&WatchEvent::Put(entry("p/K/5", &a.encode(), 12)));
        assert_eq!(
            v.apply(&WatchEvent::Deleted {
                key: "p/K/3".into(),
                revision: 13
            }),
            Some(AssignmentChange::Released {
                kind: "K".into(),
                id: "3".into(),
                from: b.clone(),
            })
        );
        assert!(
            v.apply(&WatchEvent::Deleted {
                key: "p/K/5".into(),
                revision: 13
            })
            .is_some(),
            "a second change at the same revision counts too"
        );
        assert_eq!(v.owner("K", "3"), None);
        // A malformed put changes nothing and is counted.
        assert_eq!(v.apply(&WatchEvent::Put(entry("p/K/4", b"{", 14))), None);
        assert_eq!(v.malformed(), 2);
        assert_eq!(v.revision(), 14);
    }
}
