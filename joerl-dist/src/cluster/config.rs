//! Cluster configuration: code defaults < a YAML or JSON file < environment
//! variables < explicit builder calls, checked once, with the field and the
//! reason for anything invalid.
//!
//! A file names the same keys as [`ClusterConfig`]'s fields (durations in
//! milliseconds, under keys ending in `_ms`); keys it does not know are an
//! error, so a typo is not silently ignored:
//!
//! ```yaml
//! cluster_name: prod
//! port: 7946
//! seeds: ["10.0.0.1:7946", "10.0.0.2:7946"]
//! probe_interval_ms: 500
//! metadata: { role: worker }
//! ```
//!
//! The environment variables are `CLUSTER_PORT`, `CLUSTER_NAME` and
//! `CLUSTER_SEEDS` (comma-separated `host:port`).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Most metadata entries a member may carry.
pub const MAX_METADATA_ENTRIES: usize = 16;
/// Most bytes of metadata (keys and values) a member may carry.
pub const MAX_METADATA_BYTES: usize = 1024;
/// Bytes of a gossip packet kept for everything but two identities'
/// metadata: node names, addresses, SWIM's message and a few members.
const PACKET_ROOM: usize = 768;

/// The longest any of the configuration's durations may be.
const MAX_DURATION: Duration = Duration::from_secs(86_400);

/// The default gossip port (memberlist's and Serf's).
pub const DEFAULT_GOSSIP_PORT: u16 = 7946;

/// The membership layer's configuration. Build it with
/// [`ClusterConfig::builder`] (which applies a file and the environment in
/// their order) or take [`ClusterConfig::default`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Members of one cluster share this name; gossip of another name is
    /// refused. Letters, digits, `_`, `-`, `.`; at most 64 bytes.
    pub cluster_name: String,
    /// The address the gossip socket binds to, which is also the address
    /// other members reach this one at: an address they can reach, never
    /// the unspecified `0.0.0.0`/`::`. Default: `127.0.0.1` (one host).
    pub bind_addr: IpAddr,
    /// The gossip (UDP) port; 0 picks a free one.
    pub port: u16,
    /// Members to join through, as `host:port` of their gossip sockets.
    pub seeds: Vec<String>,
    /// How often a member probes another.
    pub probe_interval: Duration,
    /// How long a probe waits for its answer before asking others to probe
    /// (indirect probes); less than `probe_interval`.
    pub probe_timeout: Duration,
    /// How often gossip is sent.
    pub gossip_interval: Duration,
    /// A suspected member is declared failed after this many probe intervals
    /// without refuting the suspicion (a fixed time, not scaled by the
    /// cluster's size).
    pub suspicion_multiplier: u32,
    /// The largest gossip packet, envelope included (within one UDP datagram).
    pub max_packet_size: usize,
    /// How often a member announces itself to the seeds and to members it
    /// considers down, so that a partition heals into one cluster.
    pub announce_interval: Duration,
    /// Small facts a member publishes about itself (roles, version).
    pub metadata: BTreeMap<String, String>,
    /// Connect to every member as soon as it is up (Erlang's
    /// `connect_all`), instead of on the first send to it.
    pub connect_all: bool,
    /// How long `Cluster::join` waits for a seed to answer.
    pub join_timeout: Duration,
    /// Where cluster metadata (placement's assignments, the leader) is
    /// kept: decided among the members (`embedded`, the default), or in
    /// etcd (`etcd`, with [`ClusterConfig::etcd_endpoints`]).
    pub metadata_store: MetadataStoreKind,
    /// The etcd members' client URLs (`http://host:2379` or `https://..`),
    /// for `metadata_store: etcd`.
    pub etcd_endpoints: Vec<String>,
}

/// Where cluster metadata is kept (the `metadata_store` key).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MetadataStoreKind {
    /// Decided among the members (the embedded leader and placement).
    #[default]
    Embedded,
    /// In etcd (`cluster::store::etcd`, joerl-dist's `etcd` feature).
    Etcd,
}

impl std::str::FromStr for MetadataStoreKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "embedded" => Ok(MetadataStoreKind::Embedded),
            "etcd" => Ok(MetadataStoreKind::Etcd),
            other => Err(format!("{other:?} is not embedded or etcd")),
        }
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            cluster_name: "joerl".into(),
            bind_addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: DEFAULT_GOSSIP_PORT,
            seeds: Vec::new(),
            probe_interval: Duration::from_millis(500),
            probe_timeout: Duration::from_millis(200),
            gossip_interval: Duration::from_millis(100),
            suspicion_multiplier: 3,
            max_packet_size: 1400,
            announce_interval: Duration::from_secs(10),
            metadata: BTreeMap::new(),
            connect_all: false,
            join_timeout: Duration::from_secs(5),
            metadata_store: MetadataStoreKind::Embedded,
            etcd_endpoints: Vec::new(),
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A value is out of range or malformed.
    #[error("invalid cluster configuration: {field}: {reason}")]
    Invalid {
        /// The field, the file key or the environment variable.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The configuration file could not be read or parsed.
    #[error("cannot load cluster configuration from {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why (the I/O or parse error, with its position).
        reason: String,
    },
}

fn invalid(field: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.to_string(),
        reason: reason.into(),
    }
}

/// One layer of settings: what a file, the environment or the builder sets.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct Layer {
    cluster_name: Option<String>,
    bind_addr: Option<IpAddr>,
    port: Option<u16>,
    seeds: Option<Vec<String>>,
    probe_interval_ms: Option<u64>,
    probe_timeout_ms: Option<u64>,
    gossip_interval_ms: Option<u64>,
    suspicion_multiplier: Option<u32>,
    max_packet_size: Option<usize>,
    announce_interval_ms: Option<u64>,
    metadata: Option<BTreeMap<String, String>>,
    connect_all: Option<bool>,
    join_timeout_ms: Option<u64>,
    metadata_store: Option<MetadataStoreKind>,
    etcd_endpoints: Option<Vec<String>>,
}

impl Layer {
    fn apply(self, c: &mut ClusterConfig) {
        let ms = Duration::from_millis;
        if let Some(v) = self.cluster_name {
            c.cluster_name = v;
        }
        if let Some(v) = self.bind_addr {
            c.bind_addr = v;
        }
        if let Some(v) = self.port {
            c.port = v;
        }
        if let Some(v) = self.seeds {
            c.seeds = v;
        }
        if let Some(v) = self.probe_interval_ms {
            c.probe_interval = ms(v);
        }
        if let Some(v) = self.probe_timeout_ms {
            c.probe_timeout = ms(v);
        }
        if let Some(v) = self.gossip_interval_ms {
            c.gossip_interval = ms(v);
        }
        if let Some(v) = self.suspicion_multiplier {
            c.suspicion_multiplier = v;
        }
        if let Some(v) = self.max_packet_size {
            c.max_packet_size = v;
        }
        if let Some(v) = self.announce_interval_ms {
            c.announce_interval = ms(v);
        }
        if let Some(v) = self.metadata {
            c.metadata = v;
        }
        if let Some(v) = self.connect_all {
            c.connect_all = v;
        }
        if let Some(v) = self.join_timeout_ms {
            c.join_timeout = ms(v);
        }
        if let Some(v) = self.metadata_store {
            c.metadata_store = v;
        }
        if let Some(v) = self.etcd_endpoints {
            c.etcd_endpoints = v;
        }
    }

    /// The layer the environment variables make (`get` reads one).
    fn from_env(get: &dyn Fn(&str) -> Option<String>) -> Result<Layer, ConfigError> {
        let mut layer = Layer::default();
        if let Some(port) = get("CLUSTER_PORT") {
            layer.port =
                Some(port.trim().parse().map_err(|e| {
                    invalid("CLUSTER_PORT", format!("{port:?} is not a port: {e}"))
                })?);
        }
        if let Some(name) = get("CLUSTER_NAME") {
            layer.cluster_name = Some(name.trim().to_string());
        }
        // Empty means unset, as for most tools' variables.
        let list = |s: String| -> Vec<String> {
            s.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        };
        if let Some(seeds) = get("CLUSTER_SEEDS").filter(|s| !s.trim().is_empty()) {
            layer.seeds = Some(list(seeds));
        }
        if let Some(kind) = get("CLUSTER_METADATA_STORE").filter(|s| !s.trim().is_empty()) {
            layer.metadata_store = Some(
                kind.parse()
                    .map_err(|e| invalid("CLUSTER_METADATA_STORE", e))?,
            );
        }
        if let Some(e) = get("CLUSTER_ETCD_ENDPOINTS").filter(|s| !s.trim().is_empty()) {
            layer.etcd_endpoints = Some(list(e));
        }
        Ok(layer)
    }
}

/// Reads one environment variable.
type EnvSource = Box<dyn Fn(&str) -> Option<String>>;

/// Builds a [`ClusterConfig`] from its layers (see the module documentation).
#[derive(Default)]
pub struct ClusterConfigBuilder {
    file: Option<PathBuf>,
    env: Option<EnvSource>,
    explicit: Layer,
    /// The first duration given in code that is not whole milliseconds.
    sub_ms: Option<&'static str>,
}

impl std::fmt::Debug for ClusterConfigBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfigBuilder")
            .field("file", &self.file)
            .field("env", &self.env.is_some())
            .field("explicit", &self.explicit)
            .finish()
    }
}

impl ClusterConfig {
    /// A builder starting from the defaults, with no file and no
    /// environment.
    pub fn builder() -> ClusterConfigBuilder {
        ClusterConfigBuilder::default()
    }

    /// Checks every field; the first invalid one is named in the error.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let name = &self.cluster_name;
        if name.is_empty() || name.len() > 64 {
            return Err(invalid("cluster_name", "must be 1 to 64 bytes"));
        }
        if let Some(c) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
        {
            return Err(invalid(
                "cluster_name",
                format!("{c:?} is not allowed (letters, digits, '_', '-', '.')"),
            ));
        }
        if self.bind_addr.is_unspecified() {
            return Err(invalid(
                "bind_addr",
                "must be an address other members can reach, not the unspecified address (members advertise it)",
            ));
        }
        for seed in &self.seeds {
            check_seed(seed)?;
        }
        for e in &self.etcd_endpoints {
            check_etcd_endpoint(e)?;
        }
        if self.metadata_store == MetadataStoreKind::Etcd && self.etcd_endpoints.is_empty() {
            return Err(invalid(
                "etcd_endpoints",
                "metadata_store: etcd needs at least one endpoint (http://host:port)",
            ));
        }
        let positive = |field: &str, d: Duration| {
            if d.is_zero() {
                Err(invalid(field, "must be more than 0 ms"))
            } else if d > MAX_DURATION {
                Err(invalid(field, "must be at most a day (86400000 ms)"))
            } else {
                Ok(())
            }
        };
        positive("probe_interval_ms", self.probe_interval)?;
        positive("probe_timeout_ms", self.probe_timeout)?;
        positive("gossip_interval_ms", self.gossip_interval)?;
        positive("announce_interval_ms", self.announce_interval)?;
        positive("join_timeout_ms", self.join_timeout)?;
        if self.probe_timeout >= self.probe_interval {
            return Err(invalid(
                "probe_timeout_ms",
                format!(
                    "{} ms must be less than probe_interval_ms ({} ms)",
                    self.probe_timeout.as_millis(),
                    self.probe_interval.as_millis()
                ),
            ));
        }
        if !(1..=32).contains(&self.suspicion_multiplier) {
            return Err(invalid("suspicion_multiplier", "must be 1 to 32"));
        }
        if !(512..=65_507).contains(&self.max_packet_size) {
            return Err(invalid(
                "max_packet_size",
                "must be 512 to 65507 bytes (one UDP datagram)",
            ));
        }
        if self.metadata.len() > MAX_METADATA_ENTRIES {
            return Err(invalid(
                "metadata",
                format!("at most {MAX_METADATA_ENTRIES} entries"),
            ));
        }
        let bytes: usize = self.metadata.iter().map(|(k, v)| k.len() + v.len()).sum();
        if bytes > MAX_METADATA_BYTES {
            return Err(invalid(
                "metadata",
                format!("{bytes} bytes of keys and values, at most {MAX_METADATA_BYTES}"),
            ));
        }
        // A packet's header carries two identities (sender and receiver),
        // each with its metadata, beside names, addresses and the message:
        // metadata that does not fit twice with that room would make every
        // packet too large to send.
        let needed = 2 * bytes + PACKET_ROOM;
        if needed > self.max_packet_size {
            return Err(invalid(
                "metadata",
                format!(
                    "{bytes} bytes of metadata need max_packet_size of at least {needed} (it is {}): a packet carries two identities",
                    self.max_packet_size
                ),
            ));
        }
        Ok(())
    }
}

/// An etcd client URL: `http://` or `https://`, then `host:port` (no path).
fn check_etcd_endpoint(url: &str) -> Result<(), ConfigError> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| {
            invalid(
                "etcd_endpoints",
                format!("{url:?} must start with http:// or https://"),
            )
        })?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let bad = |why: &str| invalid("etcd_endpoints", format!("{url:?}: {why}"));
    if rest.contains('/') {
        return Err(bad("no path is allowed after host:port"));
    }
    let (host, port) = rest.rsplit_once(':').ok_or_else(|| bad("needs a port"))?;
    if host.is_empty() {
        return Err(bad("needs a host"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(bad("the port must be 1 to 65535")),
    }
}

/// A seed is `host:port` with a port other than 0.
fn check_seed(seed: &str) -> Result<(), ConfigError> {
    let field = "seeds";
    let (host, port) = seed
        .rsplit_once(':')
        .ok_or_else(|| invalid(field, format!("{seed:?} is not host:port")))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(invalid(field, format!("{seed:?} has no host")));
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err(invalid(field, format!("{seed:?} has no valid port"))),
        Ok(_) => Ok(()),
    }
}

impl ClusterConfigBuilder {
    /// Reads this YAML (`.yaml`, `.yml`) or JSON (`.json`) file over the
    /// defaults.
    pub fn file(mut self, path: impl Into<PathBuf>) -> Self {
        self.file = Some(path.into());
        self
    }

    /// Reads `CLUSTER_PORT`, `CLUSTER_NAME`, `CLUSTER_SEEDS`,
    /// `CLUSTER_METADATA_STORE` and `CLUSTER_ETCD_ENDPOINTS` from the
    /// process environment, over the file.
    pub fn env(self) -> Self {
        self.env_from(|k| std::env::var(k).ok())
    }

    /// Reads the environment variables through `get` (for tests, or another
    /// source of variables).
    pub fn env_from(mut self, get: impl Fn(&str) -> Option<String> + 'static) -> Self {
        self.env = Some(Box::new(get));
        self
    }

    /// Sets the cluster name, over every other layer.
    pub fn cluster_name(mut self, name: impl Into<String>) -> Self {
        self.explicit.cluster_name = Some(name.into());
        self
    }

    /// Sets the gossip bind address.
    pub fn bind_addr(mut self, addr: IpAddr) -> Self {
        self.explicit.bind_addr = Some(addr);
        self
    }

    /// Sets the gossip port.
    pub fn port(mut self, port: u16) -> Self {
        self.explicit.port = Some(port);
        self
    }

    /// Sets the seeds.
    pub fn seeds<S: Into<String>>(mut self, seeds: impl IntoIterator<Item = S>) -> Self {
        self.explicit.seeds = Some(seeds.into_iter().map(Into::into).collect());
        self
    }

    /// Durations are whole milliseconds, as in files.
    fn ms(&mut self, field: &'static str, d: Duration) -> Option<u64> {
        if d.subsec_nanos() % 1_000_000 != 0 && self.sub_ms.is_none() {
            self.sub_ms = Some(field);
        }
        Some(d.as_millis().min(u64::MAX as u128) as u64)
    }

    /// Sets the probe interval and timeout (whole milliseconds).
    pub fn probe(mut self, interval: Duration, timeout: Duration) -> Self {
        self.explicit.probe_interval_ms = self.ms("probe_interval_ms", interval);
        self.explicit.probe_timeout_ms = self.ms("probe_timeout_ms", timeout);
        self
    }

    /// Sets the gossip interval (whole milliseconds).
    pub fn gossip_interval(mut self, every: Duration) -> Self {
        self.explicit.gossip_interval_ms = self.ms("gossip_interval_ms", every);
        self
    }

    /// Sets the announce interval (whole milliseconds).
    pub fn announce_interval(mut self, every: Duration) -> Self {
        self.explicit.announce_interval_ms = self.ms("announce_interval_ms", every);
        self
    }

    /// Sets how long a join waits for a seed (whole milliseconds).
    pub fn join_timeout(mut self, wait: Duration) -> Self {
        self.explicit.join_timeout_ms = self.ms("join_timeout_ms", wait);
        self
    }

    /// Connects to every member as soon as it is up (Erlang's
    /// `connect_all`), or only on the first send (the default).
    pub fn connect_all(mut self, eager: bool) -> Self {
        self.explicit.connect_all = Some(eager);
        self
    }

    /// Sets the suspicion multiplier.
    pub fn suspicion_multiplier(mut self, n: u32) -> Self {
        self.explicit.suspicion_multiplier = Some(n);
        self
    }

    /// Sets the largest gossip packet.
    pub fn max_packet_size(mut self, bytes: usize) -> Self {
        self.explicit.max_packet_size = Some(bytes);
        self
    }

    /// Chooses where cluster metadata is kept.
    pub fn metadata_store(mut self, kind: MetadataStoreKind) -> Self {
        self.explicit.metadata_store = Some(kind);
        self
    }

    /// Sets the etcd endpoints (client URLs).
    pub fn etcd_endpoints<S: Into<String>>(mut self, urls: impl IntoIterator<Item = S>) -> Self {
        self.explicit.etcd_endpoints = Some(urls.into_iter().map(Into::into).collect());
        self
    }

    /// Adds a metadata entry.
    pub fn meta(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.explicit
            .metadata
            .get_or_insert_with(BTreeMap::new)
            .insert(key.into(), value.into());
        self
    }

    /// The configuration, its layers applied in order and checked.
    pub fn build(self) -> Result<ClusterConfig, ConfigError> {
        if let Some(field) = self.sub_ms {
            return Err(invalid(field, "must be whole milliseconds"));
        }
        let mut config = ClusterConfig::default();
        if let Some(path) = &self.file {
            load_file(path)?.apply(&mut config);
        }
        if let Some(get) = &self.env {
            Layer::from_env(get.as_ref())?.apply(&mut config);
        }
        let explicit_meta = self.explicit.metadata.clone();
        let mut explicit = self.explicit;
        // Metadata entries given in code add to the file's, not replace them.
        if let Some(meta) = explicit_meta {
            let mut merged = config.metadata.clone();
            merged.extend(meta);
            explicit.metadata = Some(merged);
        }
        explicit.apply(&mut config);
        config.validate()?;
        Ok(config)
    }
}

fn load_file(path: &Path) -> Result<Layer, ConfigError> {
    let fail = |reason: String| ConfigError::File {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "yaml" | "yml" => serde_saphyr::from_str(&text).map_err(|e| fail(e.to_string())),
        "json" => serde_json::from_str(&text).map_err(|e| fail(e.to_string())),
        other => Err(fail(format!(
            "unknown extension {other:?}: use .yaml, .yml or .json"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + 'static {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| vars.get(k).cloned()
    }

    fn write(dir: &tempdir::Dir, name: &str, text: &str) -> PathBuf {
        let path = dir.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// A directory removed when dropped.
    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new(tag: &str) -> Dir {
                let p = std::env::temp_dir().join(format!(
                    "joerl-cluster-config-{tag}-{}-{}",
                    std::process::id(),
                    rand::random::<u64>()
                ));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn defaults_are_valid() {
        let c = ClusterConfig::builder().build().unwrap();
        assert_eq!(c, ClusterConfig::default());
        assert_eq!(c.port, 7946);
    }

    #[test]
    fn file_then_env_then_builder_each_win_over_the_one_before() {
        let dir = tempdir::Dir::new("layers");
        let yaml = write(
            &dir,
            "c.yaml",
            "cluster_name: fromfile\nport: 8000\nseeds: [\"a:1\"]\nprobe_interval_ms: 900\nmetadata: { role: worker, zone: a }\n",
        );
        // The file alone.
        let c = ClusterConfig::builder().file(&yaml).build().unwrap();
        assert_eq!(
            (c.cluster_name.as_str(), c.port, c.seeds.clone()),
            ("fromfile", 8000, vec!["a:1".to_string()])
        );
        assert_eq!(c.probe_interval, Duration::from_millis(900));
        // The environment over the file.
        let c = ClusterConfig::builder()
            .file(&yaml)
            .env_from(env(&[
                ("CLUSTER_PORT", "8001"),
                ("CLUSTER_SEEDS", "b:2, c:3"),
            ]))
            .build()
            .unwrap();
        assert_eq!(c.port, 8001);
        assert_eq!(c.seeds, vec!["b:2".to_string(), "c:3".to_string()]);
        assert_eq!(c.cluster_name, "fromfile", "not set in the environment");
        // Explicit calls over both.
        let c = ClusterConfig::builder()
            .file(&yaml)
            .env_from(env(&[
                ("CLUSTER_PORT", "8001"),
                ("CLUSTER_NAME", "fromenv"),
            ]))
            .port(8002)
            .meta("version", "2")
            .build()
            .unwrap();
        assert_eq!(c.port, 8002);
        assert_eq!(c.cluster_name, "fromenv");
        assert_eq!(
            c.metadata.keys().collect::<Vec<_>>(),
            ["role", "version", "zone"]
        );
    }

    #[test]
    fn json_files_work_like_yaml_and_unknown_keys_are_refused() {
        let dir = tempdir::Dir::new("json");
        let json = write(&dir, "c.json", r#"{"cluster_name": "j", "port": 0}"#);
        let c = ClusterConfig::builder().file(&json).build().unwrap();
        assert_eq!((c.cluster_name.as_str(), c.port), ("j", 0));
        let typo = write(&dir, "t.yaml", "cluster_nmae: x\n");
        let err = ClusterConfig::builder().file(&typo).build().unwrap_err();
        assert!(
            matches!(&err, ConfigError::File { reason, .. } if reason.contains("cluster_nmae")),
            "{err}"
        );
        let toml = write(&dir, "c.toml", "x = 1");
        assert!(matches!(
            ClusterConfig::builder().file(&toml).build(),
            Err(ConfigError::File { .. })
        ));
        let missing = dir.0.join("missing.yaml");
        assert!(matches!(
            ClusterConfig::builder().file(&missing).build(),
            Err(ConfigError::File { .. })
        ));
    }

    #[test]
    fn every_invalid_field_is_named() {
        let field_of = |b: ClusterConfigBuilder| match b.build() {
            Err(ConfigError::Invalid { field, .. }) => field,
            other => panic!("expected Invalid, got {other:?}"),
        };
        let b = ClusterConfig::builder;
        assert_eq!(field_of(b().cluster_name("")), "cluster_name");
        assert_eq!(
            field_of(b().bind_addr(IpAddr::V4(Ipv4Addr::UNSPECIFIED))),
            "bind_addr"
        );
        assert_eq!(field_of(b().cluster_name("a b")), "cluster_name");
        assert_eq!(field_of(b().cluster_name("x".repeat(65))), "cluster_name");
        assert_eq!(field_of(b().seeds(["nohost"])), "seeds");
        assert_eq!(field_of(b().seeds([":7946"])), "seeds");
        assert_eq!(field_of(b().seeds(["h:0"])), "seeds");
        assert_eq!(field_of(b().seeds(["h:99999"])), "seeds");
        assert_eq!(
            field_of(b().probe(Duration::ZERO, Duration::ZERO)),
            "probe_interval_ms"
        );
        assert_eq!(
            field_of(b().probe(Duration::from_millis(100), Duration::from_millis(100))),
            "probe_timeout_ms"
        );
        assert_eq!(
            field_of(b().gossip_interval(Duration::ZERO)),
            "gossip_interval_ms"
        );
        assert_eq!(
            field_of(b().suspicion_multiplier(0)),
            "suspicion_multiplier"
        );
        assert_eq!(
            field_of(b().suspicion_multiplier(33)),
            "suspicion_multiplier"
        );
        assert_eq!(field_of(b().max_packet_size(100)), "max_packet_size");
        assert_eq!(field_of(b().max_packet_size(70_000)), "max_packet_size");
        let mut many = b();
        for i in 0..17 {
            many = many.meta(format!("k{i}"), "v");
        }
        assert_eq!(field_of(many), "metadata");
        assert_eq!(field_of(b().meta("k", "v".repeat(1100))), "metadata");
        // Fits the entry bound, but not twice in a default 1,400-byte packet.
        assert_eq!(field_of(b().meta("k", "v".repeat(400))), "metadata");
        assert!(
            b().meta("k", "v".repeat(400))
                .max_packet_size(9000)
                .build()
                .is_ok()
        );
        assert_eq!(
            field_of(b().env_from(env(&[("CLUSTER_PORT", "seventy")]))),
            "CLUSTER_PORT"
        );
        // The message says why.
        let err = b().seeds(["h:0"]).build().unwrap_err();
        assert!(err.to_string().contains("h:0"), "{err}");
        // IPv6 seeds are host:port too.
        assert!(b().seeds(["[::1]:7946", "localhost:7946"]).build().is_ok());
        assert_eq!(
            field_of(b().announce_interval(Duration::ZERO)),
            "announce_interval_ms"
        );
        assert_eq!(
            field_of(b().join_timeout(Duration::ZERO)),
            "join_timeout_ms"
        );
        // Durations are whole milliseconds: a fraction is refused, not cut.
        assert_eq!(
            field_of(b().probe(Duration::from_micros(1500), Duration::from_millis(1))),
            "probe_interval_ms"
        );
        assert_eq!(
            field_of(b().gossip_interval(Duration::from_micros(100_500))),
            "gossip_interval_ms"
        );
    }

    #[test]
    fn the_newer_keys_load_from_files_and_an_empty_seed_variable_is_unset() {
        let dir = tempdir::Dir::new("newer");
        let yaml = write(
            &dir,
            "c.yaml",
            "seeds: [\"a:1\"]\nconnect_all: true\njoin_timeout_ms: 750\nannounce_interval_ms: 2000\n",
        );
        let c = ClusterConfig::builder()
            .file(&yaml)
            .env_from(env(&[("CLUSTER_SEEDS", " ")]))
            .build()
            .unwrap();
        assert!(c.connect_all);
        assert_eq!(c.join_timeout, Duration::from_millis(750));
        assert_eq!(c.announce_interval, Duration::from_secs(2));
        assert_eq!(c.seeds, ["a:1"], "an empty CLUSTER_SEEDS keeps the file's");
        let c = ClusterConfig::builder()
            .file(&yaml)
            .connect_all(false)
            .build()
            .unwrap();
        assert!(!c.connect_all, "the builder wins");
    }

    #[test]
    fn the_metadata_store_keys_load_from_files_the_environment_and_code() {
        let dir = tempdir::Dir::new("store");
        let yaml = write(
            &dir,
            "c.yaml",
            "metadata_store: etcd\netcd_endpoints: [\"http://10.0.0.1:2379\", \"https://e2:2379\"]\n",
        );
        let c = ClusterConfig::builder().file(&yaml).build().unwrap();
        assert_eq!(c.metadata_store, MetadataStoreKind::Etcd);
        assert_eq!(
            c.etcd_endpoints,
            ["http://10.0.0.1:2379", "https://e2:2379"]
        );
        // The environment wins over the file, the builder over both.
        let c = ClusterConfig::builder()
            .file(&yaml)
            .env_from(env(&[(
                "CLUSTER_ETCD_ENDPOINTS",
                "http://127.0.0.1:1, http://127.0.0.1:2",
            )]))
            .build()
            .unwrap();
        assert_eq!(
            c.etcd_endpoints,
            ["http://127.0.0.1:1", "http://127.0.0.1:2"]
        );
        let c = ClusterConfig::builder()
            .file(&yaml)
            .env_from(env(&[("CLUSTER_METADATA_STORE", "embedded")]))
            .build()
            .unwrap();
        assert_eq!(c.metadata_store, MetadataStoreKind::Embedded);
        let c = ClusterConfig::builder()
            .file(&yaml)
            .metadata_store(MetadataStoreKind::Embedded)
            .etcd_endpoints(["http://h:3"])
            .build()
            .unwrap();
        assert_eq!(
            (c.metadata_store, c.etcd_endpoints),
            (MetadataStoreKind::Embedded, vec!["http://h:3".to_string()])
        );
        assert_eq!(
            ClusterConfig::default().metadata_store,
            MetadataStoreKind::Embedded
        );

        // Refusals name the field.
        let field_of = |b: ClusterConfigBuilder| match b.build() {
            Err(ConfigError::Invalid { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        let b = ClusterConfig::builder;
        assert_eq!(
            field_of(b().metadata_store(MetadataStoreKind::Etcd)),
            "etcd_endpoints",
            "etcd without endpoints"
        );
        for bad in [
            "10.0.0.1:2379",
            "http://h",
            "http://:2379",
            "http://h:0",
            "http://h:2379/v3",
        ] {
            assert_eq!(
                field_of(b().etcd_endpoints([bad])),
                "etcd_endpoints",
                "{bad}"
            );
        }
        assert_eq!(
            field_of(b().env_from(env(&[("CLUSTER_METADATA_STORE", "zookeeper")]))),
            "CLUSTER_METADATA_STORE"
        );
        let wrong = write(&dir, "w.yaml", "metadata_store: zookeeper\n");
        assert!(matches!(
            ClusterConfig::builder().file(&wrong).build(),
            Err(ConfigError::File { .. })
        ));
    }
}
