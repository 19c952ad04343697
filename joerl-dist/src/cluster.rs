//! The cluster layer: membership above the node (issue in progress).
//!
//! It sits on the node's public API and its `Resolver` seam, never on node
//! internals, as OTP's `global` and `pg` sit on `net_kernel`. Built so far,
//! with no I/O:
//!
//! - [`config`]: [`ClusterConfig`](config::ClusterConfig), from code defaults,
//!   a YAML or JSON file, the environment and builder calls, in that order,
//!   checked field by field;
//! - [`packet`]: the gossip envelope, authenticated with a key derived from the
//!   cookie and the cluster name, bounded in size, refused with a counted
//!   reason;
//! - [`member`]: a member's identity (node name, gossip and dist addresses,
//!   creation, rejoin count, metadata) and its foca codec.
//!
//! And the one piece with I/O so far, [`gossip`]: the SWIM driver (foca, the
//! UDP socket, its timers, counters of refused packets, member changes to
//! subscribers in order). Not yet built: the node life cycle as users see it,
//! dist connections that follow membership, the `Cluster` API on a node, the
//! example and the benchmark; see CLUSTERING.md's membership section.

pub mod config;
pub mod gossip;
pub mod member;
pub mod node;
pub mod packet;
