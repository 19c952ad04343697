//! The cluster layer: membership above the node.
//!
//! It sits on the node's public API and its `Resolver` seam, never on node
//! internals, as OTP's `global` and `pg` sit on `net_kernel`. Enable it on a
//! node with [`DistributedSystem::enable_clustering`](crate::DistributedSystem::enable_clustering)
//! (or start one with [`NodeBuilder::start_clustered`](crate::NodeBuilder::start_clustered));
//! the node then has a [`Cluster`]: its members, their states and health,
//! and events to actors and streams. CLUSTERING.md's membership section
//! gives the states, the timings, the wire format and the configuration.
//!
//! The modules, one concern each:
//! - [`config`]: [`ClusterConfig`], from code defaults,
//!   a YAML or JSON file, the environment and builder calls, in that order,
//!   checked field by field;
//! - [`packet`]: the gossip envelope, authenticated with a key derived from the
//!   cookie and the cluster name, bounded in size, refused with a counted
//!   reason (no I/O);
//! - [`member`]: a member's identity and its foca codec (no I/O);
//! - [`state`]: the node life cycle as users see it, a state machine over
//!   gossip events that says what each asks of the node (no I/O);
//! - [`gossip`]: the SWIM driver (foca, the UDP socket, its timers, seeds);
//! - [`node`]: the [`Cluster`] handle, which carries membership's decisions
//!   out on the node;
//! - [`spawn`]: remote spawn, [`global`]: global names, and [`pg`]: process
//!   groups (cluster services: a server per node at a well-known name);
//!   global names and groups are addresses ([`Dest::Global`](joerl_core::Dest::Global),
//!   [`Dest::Group`](joerl_core::Dest::Group)) through the node's name service;
//! - [`placement`]: actors by identity (rendezvous placement, the leader
//!   and its directives, circuit breakers, delivery guarantees);
//! - [`store`]: the metadata store seam ([`store::MetadataStore`]) and
//!   its etcd implementation;
//! - [`management`]: the management API, in Rust and over HTTP JSON;
//!   [`metrics`]: what the cluster reports through the `metrics` facade,
//!   and the Prometheus exporter.

pub mod config;
pub mod global;
pub mod gossip;
pub mod management;
pub mod member;
pub mod metrics;
mod names;
pub mod node;
pub mod packet;
pub mod pg;
pub mod placement;
pub mod service;
pub mod spawn;
pub mod state;
pub mod store;

pub use config::{ClusterConfig, ConfigError, DEFAULT_GOSSIP_PORT, MetadataStoreKind};
pub use node::{Cluster, ClusterError, ClusterEvents, MemberDirectory};
pub use state::{ClusterEvent, ClusterHealth, Member, MemberState};

/// The node a cluster service server should discover, if `msg` says one
/// came up: a node-up (`monitor_nodes`) or a member-up (`monitor_members`).
pub(crate) fn came_up(msg: &joerl_core::Message) -> Option<String> {
    if let Some(up) = msg.downcast_ref::<crate::NodeUp>() {
        return Some(up.node.clone());
    }
    match msg.downcast_ref::<ClusterEvent>() {
        Some(ClusterEvent::MemberUp(m)) => Some(m.name.clone()),
        _ => None,
    }
}

/// Makes a cluster service's server hear of every member that comes up,
/// when membership is enabled on `node` (else node-ups are all it gets).
pub(crate) fn watch_members(node: &crate::DistributedSystem, server: Option<joerl_core::Pid>) {
    if let (Ok(cluster), Some(pid)) = (node.cluster(), server) {
        cluster.monitor_members(node, pid);
    }
}
