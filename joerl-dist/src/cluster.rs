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
//!   reason.
//!
//! The SWIM driver (foca, the UDP socket, timers, member states and events)
//! comes next; see CLUSTERING.md's membership section for what is planned.

pub mod config;
pub mod member;
pub mod packet;
