//! Cluster placement (Cajun's cluster mode, Orleans' and Akka Cluster
//! Sharding's idea): actors addressed by identity `(kind, id)`, placed on
//! one member by [`rendezvous`] hashing, with a [`leader`] that coordinates
//! moves and [`breaker`]s for the sends to placed actors.
//!
//! Built so far: the placement function and its seam, the leader election
//! as a state machine and its seam, circuit breakers and retries. Each is
//! a module with no I/O of its own, unit-tested by feeding it events.

pub mod breaker;
pub mod leader;
pub mod rendezvous;

pub use breaker::{
    BreakerConfig, BreakerError, BreakerState, Breakers, CircuitBreaker, CircuitOpen, RetryPolicy,
};
pub use leader::{Election, ElectionEffect, Leader, LeaderElection};
pub use rendezvous::{Candidate, Identity, LeastLoaded, Placement, PreferLocal, Rendezvous};
