//! Cluster placement (Cajun's cluster mode, Orleans' and Akka Cluster
//! Sharding's idea): actors addressed by identity `(kind, id)`, placed on
//! one member by [`rendezvous`] hashing, with a [`leader`] that coordinates
//! moves and [`breaker`]s for the sends to placed actors.
//!
//! Built so far: placed kinds registered at compile time ([`kinds`],
//! [`placed!`](crate::placed)), routing and activation on the owner with
//! idle passivation ([`placements`]: [`start`], [`Placements`],
//! [`PlacedRef`] is a `Dest`), the placement function and its seam, the
//! leader election as a state machine and its seam, circuit breakers and
//! retries, and the [`handoff`] that keeps one activation per identity
//! while views differ. Not yet: the leader's coordination, migrate and
//! drain, delivery guarantees, metrics and the management API.

pub mod breaker;
pub mod elector;
pub mod handoff;
pub mod kinds;
pub mod leader;
pub mod placements;
pub mod rendezvous;
pub mod view;

pub use breaker::{
    BreakerConfig, BreakerError, BreakerState, Breakers, CircuitBreaker, CircuitOpen, RetryPolicy,
};
pub use elector::{EmbeddedLeader, LEADER_SERVER};
pub use kinds::{PlacedActor, PlacedServer};
pub use leader::{Election, ElectionEffect, Leader, LeaderElection};
pub use placements::{PlacedRef, PlacementError, Placements, start};
pub use rendezvous::{Candidate, Identity, LeastLoaded, Placement, PreferLocal, Rendezvous};
