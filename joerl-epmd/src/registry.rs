//! The shared node table: registrations, creations, leases and the reaper's work.
//!
//! Lookups are the hot path (every Erlang connection attempt starts with a
//! `PORT_PLEASE2_REQ`), so the live table is a [`DashMap`] read without any
//! global lock. Changes of membership (register, unregister, expiry) are rare
//! and go through one mutex that also guards the history of old names, so that
//! "is the name free?", "which creation comes next?" and "remember the old
//! name" happen as one step.
//!
//! # Creations
//!
//! Creations follow the real epmd (`erts/epmd/src/epmd_srv.c`): each name has a
//! 32-bit counter. A name never seen before starts from the current Unix time
//! in seconds (a joerl node's from a random value, so that two daemons, or one
//! restarted, do not hand the same creation to two incarnations registered in
//! the same second); a name registered again after it was removed continues from its
//! old counter; every registration increments the counter (values below 4 jump
//! to 4). Nodes whose highest distribution version is 6 or more get the counter
//! itself; older nodes get `counter % 3 + 1`, the 1..=3 creations of 16-bit
//! `ALIVE2_RESP`. Up to [`MAX_OLD_NAMES`] old names are remembered; beyond that
//! epmd gives the oldest remembered slot (and its counter) to the new name, and
//! so do we.
//!
//! # Lifetimes
//!
//! A registration lives either as long as the connection that made it
//! ([`Lifetime::Connection`]: every Erlang node, and joerl nodes that ask for
//! it) or until its lease runs out ([`Lifetime::Lease`]), each keep-alive
//! pushing the end of the lease forward. [`Registry::reap_expired`] removes
//! leases that ran out; lookups already hide them before the reaper runs.
//!
//! # Limits
//!
//! Besides the bound on the whole table ([`RegistryLimits::max_nodes`]), each
//! connection ([`RegistryLimits::max_per_connection`]) and each source address
//! ([`RegistryLimits::max_per_source`], see [`source_key`]) may hold only so many
//! live registrations, so one client cannot take every slot. A registration
//! counts against the connection that made it and its source until it is
//! removed (a lease that ran out counts until the reaper removes it or its name
//! is registered again).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use tokio::sync::Notify;

use crate::error::{RegistrationScope, RegistryError};
use crate::protocol::{
    DistInfo, MAX_EXTRA_BYTES, NodeInfo, NodeKind, RegistrationToken, validate_name,
};

/// How many removed names the registry remembers (epmd's `MAX_UNREG_COUNT`).
pub const MAX_OLD_NAMES: usize = 1000;
/// Default bound on the number of live registrations.
pub const DEFAULT_MAX_NODES: usize = 10_000;
/// Default bound on the live registrations made on one connection.
pub const DEFAULT_MAX_REGISTRATIONS_PER_CONNECTION: usize = 64;
/// Default bound on the live registrations from one source address (all local
/// nodes usually share `127.0.0.1`, so this is also the default bound for one host).
pub const DEFAULT_MAX_REGISTRATIONS_PER_SOURCE: usize = 256;

/// Bounds of a [`Registry`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistryLimits {
    /// Most live registrations in the table.
    pub max_nodes: usize,
    /// Most live registrations made on one connection.
    pub max_per_connection: usize,
    /// Most live registrations from one source (see [`source_key`]).
    pub max_per_source: usize,
}

impl Default for RegistryLimits {
    fn default() -> Self {
        Self {
            max_nodes: DEFAULT_MAX_NODES,
            max_per_connection: DEFAULT_MAX_REGISTRATIONS_PER_CONNECTION,
            max_per_source: DEFAULT_MAX_REGISTRATIONS_PER_SOURCE,
        }
    }
}

/// The key under which registrations from `peer` are counted for the
/// per-source limit: the IPv4 address (IPv4-mapped IPv6 addresses included),
/// `::1`, or the /64 prefix of any other IPv6 address (one host usually holds
/// a whole /64).
pub fn source_key(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                IpAddr::V4(v4)
            } else if v6.is_loopback() {
                IpAddr::V6(v6)
            } else {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        }
    }
}

/// Identifies one client connection of the server (shown as `fd` by `DUMP_REQ`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnectionId(pub u64);

/// How long a registration lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    /// Until the connection that made it closes.
    Connection,
    /// Until this long after the registration or the last keep-alive.
    Lease(Duration),
}

/// A registration as the server hands it to the registry.
#[derive(Debug, Clone)]
pub struct NewRegistration {
    /// Node name.
    pub name: String,
    /// Host where the node listens (empty: the daemon's host).
    pub host: String,
    /// Distribution port.
    pub port: u16,
    /// Free-form metadata.
    pub metadata: BTreeMap<String, String>,
    /// Fields returned by `PORT2_RESP`.
    pub dist: DistInfo,
    /// Erlang (`ALIVE2_REQ`) or joerl registration.
    pub kind: NodeKind,
    /// How long it lives.
    pub lifetime: Lifetime,
    /// Connection that registered it.
    pub owner: ConnectionId,
    /// Source it is counted against for the per-source limit (a [`source_key`];
    /// `None`: not counted).
    pub source: Option<IpAddr>,
    /// Issue a token (joerl registrations) or not (Erlang ones).
    pub with_token: bool,
    /// Woken when `STOP_REQ` removes the registration, so the owning connection closes.
    pub kick: Option<Arc<Notify>>,
}

/// What a successful registration returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registered {
    /// Creation assigned to the node.
    pub creation: u32,
    /// Token for renewal and removal, if one was asked for.
    pub token: Option<RegistrationToken>,
}

/// A line of `DUMP_REQ` output: name, port and owning connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpLine {
    /// Node name.
    pub name: String,
    /// Port it had.
    pub port: u16,
    /// Connection that registered it.
    pub connection: ConnectionId,
}

#[derive(Debug)]
struct Entry {
    info: NodeInfo,
    owner: ConnectionId,
    source: Option<IpAddr>,
    token: Option<RegistrationToken>,
    lifetime: Lifetime,
    expires_at: Option<Instant>,
    seq: u64,
    counter: u32,
    kick: Option<Arc<Notify>>,
}

impl Entry {
    fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

#[derive(Debug, Clone)]
struct OldName {
    counter: u32,
    port: u16,
    owner: ConnectionId,
}

/// Removed names and their creation counters, oldest first; and the number
/// of live registrations per connection and per source.
#[derive(Debug, Default)]
struct History {
    by_name: HashMap<String, OldName>,
    order: VecDeque<String>,
    per_owner: HashMap<ConnectionId, usize>,
    per_source: HashMap<IpAddr, usize>,
}

/// Decrements `key`'s count, forgetting it at zero (so the maps stay as small
/// as the set of current holders).
fn release<K: std::hash::Hash + Eq>(counts: &mut HashMap<K, usize>, key: K) {
    if let std::collections::hash_map::Entry::Occupied(mut slot) = counts.entry(key) {
        *slot.get_mut() -= 1;
        if *slot.get() == 0 {
            slot.remove();
        }
    }
}

impl History {
    fn remember(&mut self, name: String, old: OldName) {
        if self.by_name.insert(name.clone(), old).is_some() {
            self.order.retain(|n| n != &name);
        }
        self.order.push_back(name);
    }

    fn take(&mut self, name: &str) -> Option<OldName> {
        let old = self.by_name.remove(name)?;
        self.order.retain(|n| n != name);
        Some(old)
    }

    fn take_oldest(&mut self) -> Option<OldName> {
        let name = self.order.pop_front()?;
        self.by_name.remove(&name)
    }
}

/// epmd's `bump_creation`: increment, skipping 0..=3.
fn bump(counter: u32) -> u32 {
    let next = counter.wrapping_add(1);
    if next < 4 { 4 } else { next }
}

/// epmd's `get_creation`: 32-bit for version 6 and later, 1..=3 before.
pub fn creation_for(counter: u32, highest_version: u16) -> u32 {
    if highest_version >= 6 {
        counter
    } else {
        counter % 3 + 1
    }
}

fn unix_seconds() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0)
}

/// The shared table of registered nodes.
#[derive(Debug)]
pub struct Registry {
    nodes: DashMap<String, Entry>,
    tokens: DashMap<RegistrationToken, String>,
    membership: Mutex<History>,
    next_seq: AtomicU64,
    generation: AtomicU64,
    limits: RegistryLimits,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    /// An empty table with the default [`RegistryLimits`] ([`DEFAULT_MAX_NODES`]
    /// registrations, [`DEFAULT_MAX_REGISTRATIONS_PER_CONNECTION`] per connection,
    /// [`DEFAULT_MAX_REGISTRATIONS_PER_SOURCE`] per source).
    pub fn new() -> Self {
        Self::with_max_nodes(DEFAULT_MAX_NODES)
    }

    /// An empty table holding at most `max_nodes` registrations (and the
    /// default per-connection and per-source limits).
    pub fn with_max_nodes(max_nodes: usize) -> Self {
        Self::with_limits(RegistryLimits {
            max_nodes,
            ..RegistryLimits::default()
        })
    }

    /// An empty table with the given bounds.
    pub fn with_limits(limits: RegistryLimits) -> Self {
        Self {
            nodes: DashMap::new(),
            tokens: DashMap::new(),
            membership: Mutex::new(History::default()),
            next_seq: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            limits,
        }
    }

    /// The bounds in force.
    pub fn limits(&self) -> RegistryLimits {
        self.limits
    }

    /// A number that changes whenever a registration is added or removed. A
    /// copy of the table taken while it had a given value (and before the
    /// [`Registry::next_expiry`] of that time) is still current while it has that value.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Called after every change of membership, once the change is visible.
    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::Release);
    }

    fn membership(&self) -> MutexGuard<'_, History> {
        // A panic while holding the lock cannot leave the history inconsistent
        // in a way that matters (it is only used to pick creations).
        self.membership.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a node, or refuses if its name is invalid or held by a live registration.
    pub fn register(
        &self,
        reg: NewRegistration,
        now: Instant,
    ) -> Result<Registered, RegistryError> {
        validate_name(&reg.name).map_err(RegistryError::InvalidName)?;
        if reg.dist.extra.len() > MAX_EXTRA_BYTES {
            return Err(RegistryError::InvalidRegistration(format!(
                "extra field of {} bytes exceeds {MAX_EXTRA_BYTES}",
                reg.dist.extra.len()
            )));
        }
        let mut history = self.membership();
        if let Some(existing) = self.nodes.get(&reg.name) {
            if !existing.is_expired(now) {
                return Err(RegistryError::NameTaken(reg.name));
            }
        }
        // An expired lease the reaper has not removed yet gives way now.
        if let Some((name, old)) = self.nodes.remove(&reg.name) {
            self.retire(&mut history, name, old);
            self.changed();
        }
        let limits = self.limits;
        if history.per_owner.get(&reg.owner).copied().unwrap_or(0) >= limits.max_per_connection {
            return Err(RegistryError::TooManyRegistrations {
                scope: RegistrationScope::Connection,
                max: limits.max_per_connection,
            });
        }
        if let Some(source) = reg.source {
            if history.per_source.get(&source).copied().unwrap_or(0) >= limits.max_per_source {
                return Err(RegistryError::TooManyRegistrations {
                    scope: RegistrationScope::Source(source),
                    max: limits.max_per_source,
                });
            }
        }
        if self.nodes.len() >= limits.max_nodes {
            return Err(RegistryError::TableFull {
                max: limits.max_nodes,
            });
        }
        // epmd starts a new name from the Unix time in seconds; a joerl node
        // starts from a random counter instead, so that a node restarted within
        // the same second with a fresh daemon (or found through another one)
        // does not get its old creation back: joerl tells incarnations apart by it.
        let start = || match reg.kind {
            NodeKind::Joerl => rand::random::<u32>(),
            NodeKind::Erlang => unix_seconds(),
        };
        let counter = match history.take(&reg.name) {
            Some(old) => bump(old.counter),
            None if history.by_name.len() > MAX_OLD_NAMES => history
                .take_oldest()
                .map(|old| old.counter)
                .unwrap_or_else(|| bump(start())),
            None => bump(start()),
        };
        let creation = creation_for(counter, reg.dist.highest_version);
        let token = reg.with_token.then(RegistrationToken::random);
        let (lease_ms, expires_at) = match reg.lifetime {
            Lifetime::Connection => (None, None),
            Lifetime::Lease(ttl) => (Some(ttl.as_millis() as u64), Some(now + ttl)),
        };
        let entry = Entry {
            info: NodeInfo {
                name: reg.name.clone(),
                host: reg.host,
                port: reg.port,
                metadata: reg.metadata,
                creation,
                kind: reg.kind,
                lease_ms,
                dist: reg.dist,
            },
            owner: reg.owner,
            source: reg.source,
            token,
            lifetime: reg.lifetime,
            expires_at,
            seq: self.next_seq.fetch_add(1, Ordering::Relaxed),
            counter,
            kick: reg.kick,
        };
        if let Some(token) = token {
            self.tokens.insert(token, reg.name.clone());
        }
        *history.per_owner.entry(reg.owner).or_insert(0) += 1;
        if let Some(source) = reg.source {
            *history.per_source.entry(source).or_insert(0) += 1;
        }
        self.nodes.insert(reg.name, entry);
        self.changed();
        Ok(Registered { creation, token })
    }

    /// Moves a removed entry into the history and releases its counts. Called
    /// with the membership lock held; the caller calls [`Registry::changed`].
    fn retire(&self, history: &mut History, name: String, entry: Entry) {
        if let Some(token) = entry.token {
            self.tokens.remove(&token);
        }
        release(&mut history.per_owner, entry.owner);
        if let Some(source) = entry.source {
            release(&mut history.per_source, source);
        }
        history.remember(
            name,
            OldName {
                counter: entry.counter,
                port: entry.info.port,
                owner: entry.owner,
            },
        );
    }

    /// Renews the lease held by `token`; returns the lease length (`None` for a
    /// connection-held registration, which needs no renewal but accepts it).
    pub fn keep_alive(
        &self,
        token: &RegistrationToken,
        now: Instant,
    ) -> Result<Option<Duration>, RegistryError> {
        let name = self
            .tokens
            .get(token)
            .map(|n| n.clone())
            .ok_or(RegistryError::UnknownToken)?;
        let mut entry = self
            .nodes
            .get_mut(&name)
            .ok_or(RegistryError::UnknownToken)?;
        if entry.token.as_ref() != Some(token) || entry.is_expired(now) {
            return Err(RegistryError::UnknownToken);
        }
        match entry.lifetime {
            Lifetime::Connection => Ok(None),
            Lifetime::Lease(ttl) => {
                entry.expires_at = Some(now + ttl);
                Ok(Some(ttl))
            }
        }
    }

    /// Removes the registration held by `token`.
    pub fn unregister_by_token(
        &self,
        token: &RegistrationToken,
    ) -> Result<NodeInfo, RegistryError> {
        let mut history = self.membership();
        let name = self
            .tokens
            .get(token)
            .map(|n| n.clone())
            .ok_or(RegistryError::UnknownToken)?;
        let (name, entry) = self
            .nodes
            .remove_if(&name, |_, e| e.token.as_ref() == Some(token))
            .ok_or(RegistryError::UnknownToken)?;
        let info = entry.info.clone();
        self.retire(&mut history, name, entry);
        self.changed();
        Ok(info)
    }

    /// Removes `name` if it is a connection-held registration of `connection`
    /// (called when that connection closes). Returns whether it was removed.
    pub fn unregister_connection(&self, name: &str, connection: ConnectionId) -> bool {
        let mut history = self.membership();
        match self.nodes.remove_if(name, |_, e| {
            e.owner == connection && e.lifetime == Lifetime::Connection
        }) {
            Some((name, entry)) => {
                self.retire(&mut history, name, entry);
                self.changed();
                true
            }
            None => false,
        }
    }

    /// `STOP_REQ`: removes `name` whatever holds it. Returns `None` if it was not
    /// registered, otherwise the owning connection's wake-up handle (if any).
    pub fn stop(&self, name: &[u8]) -> Option<Option<Arc<Notify>>> {
        let name = std::str::from_utf8(name).ok()?;
        let mut history = self.membership();
        let (name, entry) = self.nodes.remove(name)?;
        let kick = entry.kick.clone();
        self.retire(&mut history, name, entry);
        self.changed();
        Some(kick)
    }

    /// Runs `f` on the live node called `name`, without copying it.
    pub fn with_node<R>(
        &self,
        name: &str,
        now: Instant,
        f: impl FnOnce(&NodeInfo) -> R,
    ) -> Option<R> {
        let entry = self.nodes.get(name)?;
        if entry.is_expired(now) {
            return None;
        }
        Some(f(&entry.info))
    }

    /// A copy of the live node called `name`.
    pub fn lookup(&self, name: &str, now: Instant) -> Option<NodeInfo> {
        self.with_node(name, now, NodeInfo::clone)
    }

    /// Copies of all live nodes, most recently registered first (epmd's order).
    pub fn list(&self, now: Instant) -> Vec<NodeInfo> {
        let mut live: Vec<(u64, NodeInfo)> = self
            .nodes
            .iter()
            .filter(|e| !e.is_expired(now))
            .map(|e| (e.seq, e.info.clone()))
            .collect();
        live.sort_by_key(|entry| std::cmp::Reverse(entry.0));
        live.into_iter().map(|(_, info)| info).collect()
    }

    /// The earliest end of a lease still running at `now`: until then,
    /// [`Registry::list`] and [`Registry::dump`] change only with the [`Registry::generation`].
    pub fn next_expiry(&self, now: Instant) -> Option<Instant> {
        self.nodes
            .iter()
            .filter_map(|e| e.expires_at)
            .filter(|at| *at > now)
            .min()
    }

    /// Live registrations counted against `connection` and against `source`
    /// (a [`source_key`]) for the per-client limits.
    pub fn counts(&self, connection: ConnectionId, source: Option<IpAddr>) -> (usize, usize) {
        let history = self.membership();
        (
            history.per_owner.get(&connection).copied().unwrap_or(0),
            source
                .and_then(|s| history.per_source.get(&s).copied())
                .unwrap_or(0),
        )
    }

    /// Number of live nodes.
    pub fn len(&self, now: Instant) -> usize {
        self.nodes.iter().filter(|e| !e.is_expired(now)).count()
    }

    /// Whether no node is registered.
    pub fn is_empty(&self, now: Instant) -> bool {
        self.len(now) == 0
    }

    /// `DUMP_REQ` content: live nodes (most recent first), then old names (oldest first).
    pub fn dump(&self, now: Instant) -> (Vec<DumpLine>, Vec<DumpLine>) {
        let history = self.membership();
        let mut live: Vec<(u64, DumpLine)> = self
            .nodes
            .iter()
            .filter(|e| !e.is_expired(now))
            .map(|e| {
                (
                    e.seq,
                    DumpLine {
                        name: e.key().clone(),
                        port: e.info.port,
                        connection: e.owner,
                    },
                )
            })
            .collect();
        live.sort_by_key(|entry| std::cmp::Reverse(entry.0));
        let old = history
            .order
            .iter()
            .filter_map(|name| {
                history.by_name.get(name).map(|o| DumpLine {
                    name: name.clone(),
                    port: o.port,
                    connection: o.owner,
                })
            })
            .collect();
        (live.into_iter().map(|(_, l)| l).collect(), old)
    }

    /// Removes every lease that ran out by `now` and returns what was removed.
    pub fn reap_expired(&self, now: Instant) -> Vec<NodeInfo> {
        let expired: Vec<String> = self
            .nodes
            .iter()
            .filter(|e| e.is_expired(now))
            .map(|e| e.key().clone())
            .collect();
        if expired.is_empty() {
            return Vec::new();
        }
        let mut history = self.membership();
        let mut removed = Vec::new();
        for name in expired {
            // Re-check under the shard lock: a keep-alive may have just renewed it.
            if let Some((name, entry)) = self.nodes.remove_if(&name, |_, e| e.is_expired(now)) {
                removed.push(entry.info.clone());
                self.retire(&mut history, name, entry);
            }
        }
        if !removed.is_empty() {
            self.changed();
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joerl(name: &str, lifetime: Lifetime, owner: u64) -> NewRegistration {
        NewRegistration {
            name: name.into(),
            host: String::new(),
            port: 4000,
            metadata: BTreeMap::new(),
            dist: DistInfo::default(),
            kind: NodeKind::Joerl,
            lifetime,
            owner: ConnectionId(owner),
            source: None,
            with_token: true,
            kick: None,
        }
    }

    fn erlang(name: &str, highest_version: u16, owner: u64) -> NewRegistration {
        NewRegistration {
            dist: DistInfo {
                highest_version,
                ..DistInfo::default()
            },
            kind: NodeKind::Erlang,
            lifetime: Lifetime::Connection,
            with_token: false,
            ..joerl(name, Lifetime::Connection, owner)
        }
    }

    #[test]
    fn joerl_nodes_on_fresh_daemons_get_distinct_creations_in_the_same_second() {
        // Two daemons (or one restarted) in the same second: epmd's Unix-time
        // start would give both incarnations the same creation.
        let now = Instant::now();
        let creations: std::collections::HashSet<u32> = (0..20)
            .map(|_| {
                Registry::new()
                    .register(joerl("restarted", Lifetime::Connection, 1), now)
                    .unwrap()
                    .creation
            })
            .collect();
        assert_eq!(creations.len(), 20, "{creations:?}");
        // Erlang nodes keep epmd's rule.
        let before = unix_seconds();
        let erl = Registry::new()
            .register(erlang("erl", 6, 1), now)
            .unwrap()
            .creation;
        assert!(erl > before && erl <= unix_seconds() + 1);
    }

    #[test]
    fn creation_follows_epmd() {
        assert_eq!(bump(0), 4);
        assert_eq!(bump(u32::MAX), 4);
        assert_eq!(bump(10), 11);
        assert_eq!(creation_for(0x6b02_4e01, 6), 0x6b02_4e01);
        assert_eq!(creation_for(4, 5), 2);
        assert_eq!(creation_for(5, 0), 3);
        assert_eq!(creation_for(6, 5), 1);

        let reg = Registry::new();
        let now = Instant::now();
        let before = unix_seconds();
        let first = reg.register(erlang("foo", 6, 1), now).unwrap().creation;
        assert!(
            first > before && first <= unix_seconds() + 1,
            "{first} vs {before}"
        );
        assert!(reg.unregister_connection("foo", ConnectionId(1)));
        let second = reg.register(erlang("foo", 6, 2), now).unwrap().creation;
        assert_eq!(second, first.wrapping_add(1));
        assert!(reg.unregister_connection("foo", ConnectionId(2)));
        let third = reg.register(erlang("foo", 5, 3), now).unwrap().creation;
        assert_eq!(third, first.wrapping_add(2) % 3 + 1);
        assert!(reg.register(erlang("foo", 6, 4), now).is_err());
    }

    #[test]
    fn history_is_bounded_and_recycles_the_oldest_counter() {
        let reg = Registry::new();
        let now = Instant::now();
        for i in 0..=MAX_OLD_NAMES as u64 + 1 {
            let name = format!("n{i}");
            reg.register(erlang(&name, 6, i), now).unwrap();
            assert!(reg.unregister_connection(&name, ConnectionId(i)));
        }
        let history = reg.membership();
        assert!(history.by_name.len() <= MAX_OLD_NAMES + 2);
        assert_eq!(history.by_name.len(), history.order.len());
    }

    #[test]
    fn duplicate_live_names_are_refused_and_only_the_owner_connection_removes() {
        let reg = Registry::new();
        let now = Instant::now();
        reg.register(erlang("a", 6, 1), now).unwrap();
        assert_eq!(
            reg.register(joerl("a", Lifetime::Connection, 2), now),
            Err(RegistryError::NameTaken("a".into()))
        );
        assert!(!reg.unregister_connection("a", ConnectionId(2)));
        assert!(reg.lookup("a", now).is_some());
        assert!(reg.unregister_connection("a", ConnectionId(1)));
        assert!(reg.lookup("a", now).is_none());
    }

    #[test]
    fn tokens_guard_renewal_and_removal() {
        let reg = Registry::new();
        let now = Instant::now();
        let ttl = Duration::from_millis(300);
        let token = reg
            .register(joerl("a", Lifetime::Lease(ttl), 1), now)
            .unwrap()
            .token
            .unwrap();
        let stranger = RegistrationToken::random();
        assert_eq!(
            reg.unregister_by_token(&stranger),
            Err(RegistryError::UnknownToken)
        );
        assert_eq!(
            reg.keep_alive(&stranger, now),
            Err(RegistryError::UnknownToken)
        );
        assert_eq!(reg.keep_alive(&token, now), Ok(Some(ttl)));
        assert_eq!(reg.unregister_by_token(&token).unwrap().name, "a");
        assert!(reg.lookup("a", now).is_none());
        assert_eq!(
            reg.keep_alive(&token, now),
            Err(RegistryError::UnknownToken)
        );
    }

    #[test]
    fn leases_expire_unless_renewed_and_the_reaper_removes_them() {
        let reg = Registry::new();
        let t0 = Instant::now();
        let ttl = Duration::from_secs(10);
        let renewed = reg
            .register(joerl("renewed", Lifetime::Lease(ttl), 1), t0)
            .unwrap()
            .token
            .unwrap();
        reg.register(joerl("silent", Lifetime::Lease(ttl), 1), t0)
            .unwrap();
        reg.register(joerl("held", Lifetime::Connection, 1), t0)
            .unwrap();
        let t1 = t0 + Duration::from_secs(8);
        reg.keep_alive(&renewed, t1).unwrap();
        let t2 = t0 + Duration::from_secs(11);
        // Hidden from lookups as soon as it expires, even before the reaper runs.
        assert!(reg.lookup("silent", t2).is_none());
        assert!(reg.lookup("renewed", t2).is_some());
        let reaped = reg.reap_expired(t2);
        assert_eq!(
            reaped.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(),
            ["silent"]
        );
        assert_eq!(reg.len(t2), 2);
        // An expired name can be taken again, with the next creation.
        let t3 = t0 + Duration::from_secs(30);
        let again = reg
            .register(joerl("renewed", Lifetime::Connection, 2), t3)
            .unwrap();
        assert_eq!(again.creation, reg.lookup("renewed", t3).unwrap().creation);
        assert_eq!(reg.len(t3), 2);
    }

    #[test]
    fn stop_removes_any_registration_and_wakes_its_connection() {
        let reg = Registry::new();
        let now = Instant::now();
        let kick = Arc::new(Notify::new());
        let mut r = erlang("a", 6, 1);
        r.kick = Some(kick.clone());
        reg.register(r, now).unwrap();
        assert!(reg.stop(b"nope").is_none());
        let woken = reg.stop(b"a").unwrap().unwrap();
        assert!(Arc::ptr_eq(&woken, &kick));
        assert!(reg.is_empty(now));
        let (live, old) = reg.dump(now);
        assert!(live.is_empty());
        assert_eq!(old[0].name, "a");
    }

    #[test]
    fn the_table_is_bounded() {
        let reg = Registry::with_max_nodes(2);
        let now = Instant::now();
        reg.register(erlang("a", 6, 1), now).unwrap();
        reg.register(joerl("b", Lifetime::Connection, 2), now)
            .unwrap();
        assert_eq!(
            reg.register(erlang("c", 6, 3), now),
            Err(RegistryError::TableFull { max: 2 })
        );
        assert!(reg.unregister_connection("a", ConnectionId(1)));
        reg.register(erlang("c", 6, 3), now).unwrap();
    }

    #[test]
    fn registrations_are_bounded_per_connection_and_per_source() {
        let reg = Registry::with_limits(RegistryLimits {
            max_nodes: 100,
            max_per_connection: 2,
            max_per_source: 3,
        });
        let now = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let from = |name: &str, owner: u64, source: IpAddr, lifetime: Lifetime| NewRegistration {
            source: Some(source),
            ..joerl(name, lifetime, owner)
        };
        let lease = Lifetime::Lease(Duration::from_secs(10));
        reg.register(from("a1", 1, a, Lifetime::Connection), now)
            .unwrap();
        let leased = reg.register(from("a2", 1, a, lease), now).unwrap();
        assert_eq!(
            reg.register(from("a3", 1, a, Lifetime::Connection), now),
            Err(RegistryError::TooManyRegistrations {
                scope: RegistrationScope::Connection,
                max: 2
            })
        );
        // Another connection from the same source: one more, then the source is full.
        reg.register(from("a3", 2, a, Lifetime::Connection), now)
            .unwrap();
        let refused = reg.register(from("a4", 2, a, Lifetime::Connection), now);
        assert_eq!(
            refused,
            Err(RegistryError::TooManyRegistrations {
                scope: RegistrationScope::Source(a),
                max: 3
            })
        );
        let message = refused.unwrap_err().to_string();
        assert!(
            message.contains("source address 10.0.0.1")
                && message.contains("--max-registrations-per-source"),
            "{message}"
        );
        // Other sources are not affected; unregistered names free their slots.
        reg.register(from("b1", 3, b, Lifetime::Connection), now)
            .unwrap();
        assert_eq!(reg.counts(ConnectionId(1), Some(a)), (2, 3));
        assert!(reg.unregister_connection("a1", ConnectionId(1)));
        reg.unregister_by_token(&leased.token.unwrap()).unwrap();
        assert_eq!(reg.counts(ConnectionId(1), Some(a)), (0, 1));
        reg.register(from("a5", 1, a, lease), now).unwrap();
        // A lease that ran out is released by the reaper.
        let later = now + Duration::from_secs(11);
        assert_eq!(reg.reap_expired(later).len(), 1);
        assert_eq!(reg.counts(ConnectionId(1), Some(a)), (0, 1));
        // Registrations without a source count only against their connection.
        reg.register(joerl("n1", Lifetime::Connection, 9), later)
            .unwrap();
        reg.register(joerl("n2", Lifetime::Connection, 9), later)
            .unwrap();
        assert!(matches!(
            reg.register(joerl("n3", Lifetime::Connection, 9), later),
            Err(RegistryError::TooManyRegistrations { .. })
        ));
        let history = reg.membership();
        assert_eq!(history.per_owner.values().sum::<usize>(), reg.nodes.len());
    }

    #[test]
    fn source_keys_group_ipv6_by_prefix() {
        let key = |s: &str| source_key(s.parse().unwrap()).to_string();
        assert_eq!(key("127.0.0.1"), "127.0.0.1");
        assert_eq!(key("::ffff:10.1.2.3"), "10.1.2.3");
        assert_eq!(key("::1"), "::1");
        assert_eq!(key("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), "2001:db8:1:2::");
        assert_eq!(
            RegistrationScope::Source(source_key("2001:db8::7".parse().unwrap())).to_string(),
            "source address range 2001:db8::/64"
        );
    }

    #[test]
    fn the_generation_changes_with_membership_only() {
        let reg = Registry::new();
        let now = Instant::now();
        let g0 = reg.generation();
        let token = reg
            .register(joerl("a", Lifetime::Lease(Duration::from_secs(5)), 1), now)
            .unwrap()
            .token
            .unwrap();
        let g1 = reg.generation();
        assert_ne!(g0, g1);
        assert_eq!(reg.next_expiry(now), Some(now + Duration::from_secs(5)));
        reg.keep_alive(&token, now).unwrap();
        let _ = reg.list(now);
        assert_eq!(reg.generation(), g1);
        assert!(
            reg.register(joerl("a", Lifetime::Connection, 2), now)
                .is_err()
        );
        assert_eq!(reg.generation(), g1);
        reg.unregister_by_token(&token).unwrap();
        assert_ne!(reg.generation(), g1);
        assert_eq!(reg.next_expiry(now), None);
    }

    #[test]
    fn list_is_most_recent_first() {
        let reg = Registry::new();
        let now = Instant::now();
        for (i, name) in ["x", "y", "z"].iter().enumerate() {
            reg.register(erlang(name, 6, i as u64), now).unwrap();
        }
        let names: Vec<String> = reg.list(now).into_iter().map(|n| n.name).collect();
        assert_eq!(names, ["z", "y", "x"]);
    }
}
